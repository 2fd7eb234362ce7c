/* web_assets.h: files from src/serve/web/ compiled into the binary (the web
 * page, the API docs page, the OpenAPI document).  The table is generated
 * at configure time by cmake/VsEmbed.cmake; read-only, any thread. */
#ifndef VS_SERVE_WEB_ASSETS_H
#define VS_SERVE_WEB_ASSETS_H

#include <stddef.h>

struct vs_web_asset {
    const char *name;           /* file name, e.g. "index.html" */
    const char *content_type;
    const unsigned char *data;  /* size bytes, plus a NUL after them */
    size_t size;
};

/* The asset called name, or NULL. */
const struct vs_web_asset *vs_web_asset_find(const char *name);

#endif
