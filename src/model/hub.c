/* hub.c: --model argument -> snapshot folder.
 *
 * An existing folder is used as is.  Otherwise the argument must be a hub
 * id "org/name[@revision]" (or a legacy "name[@revision]"), looked up in
 * the local Hugging Face cache the way huggingface_hub lays it out:
 *
 *   <cache>/models--<org>--<name>/refs/<revision>      text: a commit hash
 *   <cache>/models--<org>--<name>/snapshots/<commit>/  the files (symlinks to blobs)
 *
 * <cache> is $HF_HUB_CACHE, else $HUGGINGFACE_HUB_CACHE (the older name),
 * else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
 * ~/.cache/huggingface/hub.  The revision defaults to "main"; a 40-hex
 * revision is a commit and names snapshots/<rev> directly.  Ids are
 * checked before any path is built (no "..", no odd characters), so an id
 * can never name a path outside the cache.
 *
 * Not found locally -> hub_fetch(): downloaded by hub_download.c into the
 * same cache, unless HF_HUB_OFFLINE is set (then VS_NOT_FOUND with every
 * path looked at).
 * Runs on the loading thread; reads the environment, no state.
 */
#include "model_internal.h"
#include "hub_download.h"
#include "safetensors.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

static bool is_dir(const char *p)
{
    struct stat sb;
    return stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
}

/* One component of a repo id: [A-Za-z0-9_.-]{1,96}, not starting or
 * ending with '.' or '-', without ".." or "--" (huggingface_hub's rules). */
static bool id_part_ok(const char *s, size_t n)
{
    if (n == 0 || n > 96) return false;
    if (s[0] == '.' || s[0] == '-' || s[n - 1] == '.' || s[n - 1] == '-') return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || c == '_' || c == '.' || c == '-')) return false;
        if (i > 0 && (c == '.' || c == '-') && s[i - 1] == c) return false;
    }
    return true;
}

/* A revision: a branch/tag name or a commit; [A-Za-z0-9_./-], no "..",
 * no leading '/', no empty path component and none that is "." (it names
 * refs/<rev> and goes into the URL: "main/." made refs/main a folder, and
 * curl drops "./" from a URL, so "." asked the hub for another path). */
static bool rev_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 200 || s[0] == '/' || s[n - 1] == '/' || strstr(s, "..") || strstr(s, "//"))
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!(isalnum(c) || c == '_' || c == '.' || c == '-' || c == '/')) return false;
        if (c == '.' && (i == 0 || s[i - 1] == '/') && (i + 1 == n || s[i + 1] == '/'))
            return false;
    }
    return true;
}

static bool is_commit(const char *s, size_t n)
{
    if (n != 40) return false;
    for (size_t i = 0; i < n; i++)
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i])) return false;
    return true;
}

/* Splits "org/name@rev" into repo ("org/name") and rev ("main" default). */
static bool split_id(const char *spec, char *repo, size_t repo_size, char *rev, size_t rev_size)
{
    const char *at = strchr(spec, '@');
    size_t rl = at ? (size_t)(at - spec) : strlen(spec);
    const char *rv = at ? at + 1 : "main";
    if (rl == 0 || rl >= repo_size || strlen(rv) >= rev_size) return false;
    memcpy(repo, spec, rl);
    repo[rl] = '\0';
    strcpy(rev, rv);
    if (!rev_ok(rev)) return false;
    const char *slash = strchr(repo, '/');
    if (!slash) return id_part_ok(repo, rl);
    if (strchr(slash + 1, '/')) return false;
    return id_part_ok(repo, (size_t)(slash - repo)) && id_part_ok(slash + 1, strlen(slash + 1));
}

bool vs_hub_id_valid(const char *spec)
{
    char repo[256], rev[256];
    return split_id(spec, repo, sizeof repo, rev, sizeof rev);
}

/* The cache root, per huggingface_hub's environment variables. */
static void cache_root(char *out, size_t n)
{
    const char *v;
    if ((v = getenv("HF_HUB_CACHE")) && *v) snprintf(out, n, "%s", v);
    else if ((v = getenv("HUGGINGFACE_HUB_CACHE")) && *v) snprintf(out, n, "%s", v);
    else if ((v = getenv("HF_HOME")) && *v) snprintf(out, n, "%s/hub", v);
    else if ((v = getenv("XDG_CACHE_HOME")) && *v) snprintf(out, n, "%s/huggingface/hub", v);
    else snprintf(out, n, "%s/.cache/huggingface/hub", (v = getenv("HOME")) && *v ? v : "");
}

bool vs_hub_repo_dir(const char *root, const char *repo, char *out, size_t n)
{
    size_t l = (size_t)snprintf(out, n, "%s/models--", root);
    if (l >= n) return false;
    for (const char *c = repo; *c; c++) {
        size_t need = *c == '/' ? 2 : 1;             /* models--org--name */
        if (l + need >= n) return false;
        if (*c == '/') { out[l++] = '-'; out[l++] = '-'; }
        else out[l++] = *c;
    }
    out[l] = '\0';
    return true;
}

/* Appends "; <path> (<why>)" to the list of places looked at. */
static void note(char *looked, size_t n, const char *path, const char *why)
{
    size_t l = strlen(looked);
    if (l + 1 < n && snprintf(looked + l, n - l, "%s%s (%s)", l ? "; " : "", path, why) < 0)
        looked[l] = '\0';
}

static bool is_file(const char *dir, const char *name)
{
    char p[8192];
    struct stat sb;
    return (size_t)snprintf(p, sizeof p, "%s/%s", dir, name) < sizeof p && stat(p, &sb) == 0 &&
           S_ISREG(sb.st_mode);
}

/* What a snapshot folder lacks for loading (config.json; model.safetensors,
 * or the index and each shard it names), or NULL when nothing.
 * huggingface_hub fills a snapshot file by file (AutoConfig fetches
 * config.json alone), and a download cut after config.json leaves one
 * behind: such a folder is completed from the hub, not loaded.  A shard
 * entry the loader would refuse anyway is left for it to report. */
static const char *snapshot_lacks(const char *snap)
{
    if (!is_file(snap, "config.json")) return "no config.json";
    if (is_file(snap, "model.safetensors")) return NULL;
    if (!is_file(snap, "model.safetensors.index.json"))
        return "no model.safetensors nor model.safetensors.index.json";
    char p[8192];
    snprintf(p, sizeof p, "%s/model.safetensors.index.json", snap);
    if (vs_st_check_index_size(p, NULL) != VS_OK)
        return NULL;   /* complete as far as we look; the loader refuses it, naming the size */
    json_t *idx = json_load_file(p, 0, NULL);
    const char *why = NULL, *key;
    json_t *v;
    json_object_foreach(json_object_get(idx, "weight_map"), key, v) {
        const char *shard = json_string_value(v);
        if (shard && *shard && !strchr(shard, '/') && !is_file(snap, shard)) {
            why = "a shard the index names is missing";
            break;
        }
    }
    json_decref(idx);
    return why;
}

/* Looks repo@rev up in the cache; true with dir filled when found. */
static bool hub_find_local(const char *root, const char *repo, const char *rev,
                           char *dir, size_t dir_size, char *looked, size_t looked_size)
{
    char base[4096], p[4096 + 512], commit[128];
    if (!vs_hub_repo_dir(root, repo, base, sizeof base)) {
        note(looked, looked_size, root, "path too long for this model's folder");
        return false;
    }
    if (!is_dir(base)) {
        note(looked, looked_size, base, "no such folder");
        return false;
    }
    if (is_commit(rev, strlen(rev))) {
        snprintf(commit, sizeof commit, "%s", rev);
    } else {
        snprintf(p, sizeof p, "%s/refs/%s", base, rev);
        FILE *f = fopen(p, "r");
        if (!f) {
            note(looked, looked_size, p, "no such ref");
            return false;
        }
        size_t n = fread(commit, 1, sizeof commit - 1, f);
        fclose(f);
        while (n > 0 && isspace((unsigned char)commit[n - 1])) n--;
        commit[n] = '\0';
        if (!is_commit(commit, n)) {
            note(looked, looked_size, p, "does not hold a 40-hex commit hash");
            return false;
        }
    }
    snprintf(p, sizeof p, "%s/snapshots/%s", base, commit);
    if (!is_dir(p)) {
        note(looked, looked_size, p, "no such snapshot");
        return false;
    }
    const char *lacks = snapshot_lacks(p);
    if (lacks) {
        note(looked, looked_size, p, lacks);
        return false;
    }
    if ((size_t)snprintf(dir, dir_size, "%s", p) >= dir_size) {
        note(looked, looked_size, p, "path too long");
        return false;
    }
    return true;
}

/* Not in the cache: download it, unless HF_HUB_OFFLINE says not to. */
static enum vs_status hub_fetch(const char *spec, const char *root, const char *repo,
                                const char *rev, const char *looked, char *dir,
                                size_t dir_size, struct vs_err *err)
{
    const char *off = getenv("HF_HUB_OFFLINE");
    if (off && *off && strcmp(off, "0") && strcasecmp(off, "false") && strcasecmp(off, "no"))
        return vs_err_set(err, VS_NOT_FOUND,
                          "model '%s' is not in the local cache and HF_HUB_OFFLINE is set; "
                          "looked at: %s. Unset HF_HUB_OFFLINE to download it from %s, or pass "
                          "a folder with --model DIR", spec, looked, vs_hub_endpoint());
    return vs_hub_download(root, repo, rev, dir, dir_size, err);
}

enum vs_status vs_model_resolve(const char *spec, char *dir, size_t dir_size,
                                struct vs_err *err)
{
    if (!spec || !*spec) return vs_err_set(err, VS_BAD_INPUT, "no model given");
    if (is_dir(spec)) {
        size_t n = strlen(spec);
        while (n > 1 && spec[n - 1] == '/') n--;          /* "m/" -> "m" */
        if (n >= dir_size) return vs_err_set(err, VS_BAD_INPUT, "%s: path too long", spec);
        memcpy(dir, spec, n);
        dir[n] = '\0';
        return VS_OK;
    }
    char repo[256], rev[256];
    if (!split_id(spec, repo, sizeof repo, rev, sizeof rev))
        return vs_err_set(err, VS_NOT_FOUND,
                          "model '%.200s' is not a folder, nor a valid hub id (org/name[@revision]: "
                          "letters, digits, '_', '.', '-'; no '..'; no '.' part in a revision)",
                          spec);
    char root[4096], looked[1536] = "";
    cache_root(root, sizeof root);
    note(looked, sizeof looked, spec, "not a folder");
    char found[4096];
    if (hub_find_local(root, repo, rev, found, sizeof found, looked, sizeof looked)) {
        if (strlen(found) >= dir_size) return vs_err_set(err, VS_BAD_INPUT, "%s: path too long", found);
        strcpy(dir, found);
        return VS_OK;
    }
    return hub_fetch(spec, root, repo, rev, looked, dir, dir_size, err);
}
