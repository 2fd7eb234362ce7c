/* web.c: the embedded web assets on GET / (the page), GET /docs (API docs
 * rendered from the OpenAPI document) and GET /openapi.json.
 *
 * The OpenAPI document is the embedded src/serve/web/openapi.json with
 * info.version set to this build's version and x-vitserve-model to the
 * --model argument; it is built once at start (vs_serve_web_init, main
 * thread) and immutable afterwards.  Handlers run on MHD threads.
 */
#include "server_int.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "web_assets.h"

enum vs_status vs_serve_web_init(struct vs_server *s, struct vs_err *err)
{
    const struct vs_web_asset *a = vs_web_asset_find("openapi.json");
    if (!a) return vs_err_set(err, VS_BACKEND, "openapi.json is not embedded");
    json_error_t je;
    json_t *doc = json_loadb((const char *)a->data, a->size, 0, &je);
    if (!doc) return vs_err_set(err, VS_BACKEND, "embedded openapi.json: line %d: %s",
                                je.line, je.text);
    json_t *info = json_object_get(doc, "info");
    if (json_is_object(info)) {
        json_object_set_new(info, "version", json_string(VITSERVE_VERSION));
        json_t *m = s->cfg.model ? json_string(s->cfg.model) : NULL; /* NULL if not UTF-8 */
        if (m) json_object_set_new(info, "x-vitserve-model", m);
    }
    char *text = json_dumps(doc, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    json_decref(doc);
    if (!text) return vs_err_set(err, VS_NOMEM, "out of memory for openapi.json");
    s->openapi = text;
    s->openapi_len = strlen(text);
    return VS_OK;
}

enum MHD_Result vs_serve_web_get(struct req *r, struct MHD_Connection *c)
{
    if (r->route == VS_ROUTE_OPENAPI)
        return vs_serve_respond_static(r, c, 200, "application/json", r->s->openapi,
                                       r->s->openapi_len);
    const char *name = r->route == VS_ROUTE_DOCS ? "docs.html" : "index.html";
    const struct vs_web_asset *a = vs_web_asset_find(name);
    if (!a) return vs_serve_error(r, c, 404, NULL, NULL, "%s is not embedded in this build", name);
    return vs_serve_respond_static(r, c, 200, a->content_type, a->data, a->size);
}
