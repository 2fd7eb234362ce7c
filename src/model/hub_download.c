/* hub_download.c: downloading a checkpoint from the Hugging Face Hub.
 *
 * The protocol is the one huggingface_hub speaks:
 *   HEAD {endpoint}/{repo}/resolve/{rev}/{file}   (only relative redirects
 *        followed: a renamed repository answers 307 with a Location such as
 *        /new-org/new-name/resolve/...; the 302 of an LFS file to the file
 *        storage, another host, is not: its headers are the metadata)
 *     -> X-Repo-Commit: the commit the revision points to
 *        X-Linked-Etag (LFS files: the SHA-256 of the content) or ETag
 *        X-Linked-Size / Content-Length
 *   GET  the URL the HEAD ended at, following redirects to the file storage.
 * The first file (config.json) is asked for at {rev}; every other one at the
 * commit its X-Repo-Commit named, as huggingface_hub's snapshot_download
 * does, so that one snapshot folder never holds files of two commits.
 * Files land in the cache as huggingface_hub lays it out:
 *   models--org--name/blobs/<etag>                 the content
 *   models--org--name/snapshots/<commit>/<file>    symlink to ../../blobs/<etag>
 *   models--org--name/refs/<rev>                   the commit (branch/tag revs)
 * A blob is written to <etag>.incomplete and renamed only once complete and,
 * for LFS files, once its SHA-256 matches the ETag; an interrupted download
 * is resumed from the .incomplete file with a Range request.  Several
 * processes may download into one cache at once (pods sharing a volume):
 * each blob is fetched and linked under a lock on
 *   .locks/models--org--name/<etag>.lock           flock(2), as huggingface_hub
 * so that only one writes its .incomplete file; the others wait, then find
 * the blob complete.
 *
 * Runs on the loading thread (one download at a time); progress goes to
 * stderr: a bar on a terminal, one line per file otherwise.
 */
#include "hub_download.h"
#include "model_internal.h"
#include "safetensors.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

const char *vs_hub_endpoint(void)
{
    const char *e = getenv("HF_ENDPOINT");
    return e && *e ? e : "https://huggingface.co";
}

/* $HF_TOKEN, else the token file huggingface_hub writes
 * ($HF_TOKEN_PATH, else $HF_HOME/token, else ~/.cache/huggingface/token). */
static void read_token(char *tok, size_t n)
{
    tok[0] = '\0';
    const char *v = getenv("HF_TOKEN");
    if (v && *v) {
        snprintf(tok, n, "%s", v);
        return;
    }
    char path[4096];
    if ((v = getenv("HF_TOKEN_PATH")) && *v) snprintf(path, sizeof path, "%s", v);
    else if ((v = getenv("HF_HOME")) && *v) snprintf(path, sizeof path, "%s/token", v);
    else snprintf(path, sizeof path, "%s/.cache/huggingface/token", getenv("HOME") ? getenv("HOME") : "");
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t got = fread(tok, 1, n - 1, f);
    fclose(f);
    while (got > 0 && isspace((unsigned char)tok[got - 1])) got--;
    tok[got] = '\0';
}

struct head_info {
    char url[4096];     /* where the HEAD ended (after relative redirects) */
    long status;
    char commit[64];
    char etag[160];
    char location[2048];
    bool location_cut;  /* the Location header did not fit location[] */
    char error_code[64];
    long long size;
};

/* Copies the trimmed value (at most n - 1 bytes); returns its whole length. */
static size_t trim_value(const char *v, size_t len, char *out, size_t n)
{
    while (len > 0 && isspace((unsigned char)*v)) v++, len--;
    while (len > 0 && isspace((unsigned char)v[len - 1])) len--;
    if (len >= 2 && v[0] == '"' && v[len - 1] == '"') v++, len -= 2;
    if (len > 2 && v[0] == 'W' && v[1] == '/') v += 2, len -= 2; /* weak etag */
    if (len >= 2 && v[0] == '"' && v[len - 1] == '"') v++, len -= 2;
    size_t whole = len;
    if (len >= n) len = n - 1;
    memcpy(out, v, len);
    out[len] = '\0';
    return whole;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *ud)
{
    struct head_info *h = ud;
    size_t len = size * nitems;
    const char *colon = memchr(buf, ':', len);
    if (!colon) return len;
    size_t kl = (size_t)(colon - buf);
    const char *v = colon + 1;
    size_t vl = len - kl - 1;
    char tmp[32];
#define IS(name) (kl == strlen(name) && !strncasecmp(buf, name, kl))
    if (IS("x-repo-commit")) trim_value(v, vl, h->commit, sizeof h->commit);
    else if (IS("x-linked-etag")) trim_value(v, vl, h->etag, sizeof h->etag);
    else if (IS("etag") && !h->etag[0]) trim_value(v, vl, h->etag, sizeof h->etag);
    else if (IS("location")) {
        /* a value longer than location[] keeps must not be followed half-read */
        h->location_cut = trim_value(v, vl, h->location, sizeof h->location) >=
                          sizeof h->location;
    }
    else if (IS("x-error-code")) trim_value(v, vl, h->error_code, sizeof h->error_code);
    else if (IS("x-linked-size") || (IS("content-length") && h->size < 0)) {
        trim_value(v, vl, tmp, sizeof tmp);
        h->size = atoll(tmp);
    }
#undef IS
    return len;
}

struct fetch {
    CURL *curl;
    struct curl_slist *headers;
    char endpoint[1024];
    char repo[256];
    char rev[256];
    char locks[4200];  /* <cache>/.locks/models--org--name: the blobs' lock files */
    int retries;   /* transfers restarted after a cut connection, this file */
    bool told_redirect; /* the rename notice was printed */
};

#define MAX_RELATIVE_REDIRECTS 10

static void url_of(const struct fetch *f, const char *rev, const char *file, char *url, size_t n)
{
    /* The revision is one segment of the path: the '/' of refs/pr/1 goes as
     * %2F, as huggingface_hub quotes it (the hub would read revision "refs"
     * and file "pr/1/config.json"); hub.c lets no other character that needs
     * quoting into a revision. */
    char seg[3 * sizeof f->rev];
    size_t k = 0;
    for (const char *c = rev; *c && k + 3 < sizeof seg; c++) {
        if (*c == '/') {
            memcpy(seg + k, "%2F", 3);
            k += 3;
        } else {
            seg[k++] = *c;
        }
    }
    seg[k] = '\0';
    snprintf(url, n, "%s/%s/resolve/%s/%s", f->endpoint, f->repo, seg, file);
}

/* Maps a failed HEAD/GET to a message a person can act on. */
static enum vs_status http_error(const struct fetch *f, const char *file, long status,
                                 const char *error_code, struct vs_err *err)
{
    if (status == 401 || status == 403)
        return vs_err_set(err, VS_IO,
                          "%s: %s/%s: HTTP %ld: the repository is gated or private, or does not "
                          "exist; a token with access is needed (set HF_TOKEN or run "
                          "`huggingface-cli login`)", f->endpoint, f->repo, file, status);
    if (status == 404) {
        const char *what = !strcmp(error_code, "RevisionNotFound") ? "no such revision"
                         : !strcmp(error_code, "EntryNotFound") ? "no such file in the repository"
                         : "no such model (or revision)";
        return vs_err_set(err, VS_NOT_FOUND, "%s: %s@%s: %s: %s (HTTP 404)", f->endpoint,
                          f->repo, f->rev, file, what);
    }
    return vs_err_set(err, VS_IO, "%s: %s/%s: HTTP %ld", f->endpoint, f->repo, file, status);
}

static enum vs_status net_error(const struct fetch *f, CURLcode rc, struct vs_err *err)
{
    return vs_err_set(err, VS_IO,
                      "cannot reach the hub at %s (%s): check the network or HF_ENDPOINT, or "
                      "pass a local folder with --model DIR (set HF_HUB_OFFLINE=1 to use only "
                      "the local cache)", f->endpoint, curl_easy_strerror(rc));
}

/* The target of a relative redirect (a Location with no scheme and host,
 * "/path[?query]"), resolved against url's scheme and host as RFC 3986 and
 * huggingface_hub do; false if Location names a host (or is unusable). */
static bool relative_target(const char *url, const char *location, char *out, size_t n)
{
    if (location[0] != '/' || location[1] == '/') return false; /* absolute or //host */
    const char *scheme_end = strstr(url, "://");
    if (!scheme_end) return false;
    const char *path = strchr(scheme_end + 3, '/');
    size_t origin = path ? (size_t)(path - url) : strlen(url);
    size_t loc = strcspn(location, "#");                        /* fragments stay local */
    if (origin + loc >= n) return false;
    memcpy(out, url, origin);
    memcpy(out + origin, location, loc);
    out[origin + loc] = '\0';
    return true;
}

/* HEAD of file at rev (the revision asked for, or the commit it resolved to). */
static enum vs_status head(struct fetch *f, const char *rev, const char *file,
                           struct head_info *h, struct vs_err *err)
{
    char url[4096];
    url_of(f, rev, file, url, sizeof url);
    for (int hops = 0;; hops++) {
        memset(h, 0, sizeof *h);
        h->size = -1;
        snprintf(h->url, sizeof h->url, "%s", url);
        CURL *c = f->curl;
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_URL, url);
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, f->headers);
        curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(c, CURLOPT_HEADERDATA, h);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
        curl_easy_setopt(c, CURLOPT_TIMEOUT, 30L);
        curl_easy_setopt(c, CURLOPT_USERAGENT, "vitserve/" VITSERVE_VERSION);
        CURLcode rc = curl_easy_perform(c);
        if (rc != CURLE_OK) return net_error(f, rc, err);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &h->status);
        /* A renamed repository: the hub redirects every old URL with a
         * relative Location (same host).  Followed, as huggingface_hub
         * does; a redirect to another host (an LFS file's storage) is
         * not: its own headers describe the file. */
        char next[sizeof url];
        if (h->status >= 300 && h->status < 400 && h->location_cut)
            return vs_err_set(err, VS_IO, "%s: %s/%s: the hub answered %ld with a Location header "
                              "longer than %zu bytes; not followed", f->endpoint, f->repo, file,
                              h->status, sizeof h->location - 1);
        if (h->status >= 300 && h->status < 400 &&
            relative_target(url, h->location, next, sizeof next)) {
            if (hops == MAX_RELATIVE_REDIRECTS)
                return vs_err_set(err, VS_IO, "%s: %s/%s: more than %d redirects (a redirect "
                                  "loop?); last: %s", f->endpoint, f->repo, file,
                                  MAX_RELATIVE_REDIRECTS, h->location);
            if (!f->told_redirect) {
                f->told_redirect = true;
                fprintf(stderr, "vitserve: the hub redirects %s to %s (a renamed repository?); "
                        "following\n", f->repo, h->location);
            }
            memcpy(url, next, sizeof url);
            continue;
        }
        break;
    }
    if (h->status >= 400) return http_error(f, file, h->status, h->error_code, err);
    if (h->status >= 300 && !h->etag[0])
        /* a redirect that describes no file (an LFS file's 302 carries
         * X-Linked-Etag): another host, or a path-relative Location */
        return vs_err_set(err, VS_IO, "%s: %s/%s: the hub answered %ld redirecting to '%s', which "
                          "is not followed (only redirects to a path on the same host are); "
                          "check HF_ENDPOINT", f->endpoint, f->repo, file, h->status,
                          h->location[0] ? h->location : "(no Location)");
    if (!h->etag[0])
        return vs_err_set(err, VS_IO, "%s: %s/%s: the hub sent no ETag", f->endpoint, f->repo, file);
    for (const char *p = h->etag; *p; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_')
            return vs_err_set(err, VS_IO, "%s: %s/%s: unusable ETag '%s'", f->endpoint, f->repo, file, h->etag);
    return VS_OK;
}

struct sink {
    FILE *out;
    const char *file;
    long long have, total;  /* total: the hub's size, >= 0 (transfer refuses none) */
    double t0, last;
    bool tty;
    bool over;          /* the server sent more than `total`: transfer stopped */
};

static void progress_line(struct sink *s, bool final)
{
    double el = vs_now_ms() / 1000.0 - s->t0;
    double rate = el > 0 ? s->have / el : 0;
    if (s->tty) {
        double pct = s->total > 0 ? 100.0 * s->have / s->total : 0;
        int bar = (int)(pct / 5);
        double eta = rate > 0 && s->total > 0 ? (s->total - s->have) / rate : 0;
        fprintf(stderr, "\r%-28.28s [%-20.*s] %5.1f%% %7.1f/%.1f MB %6.1f MB/s ETA %3.0fs",
                s->file, bar, "====================", pct, s->have / 1e6, s->total / 1e6,
                rate / 1e6, eta);
        if (final) fputc('\n', stderr);
    } else if (final) {
        fprintf(stderr, "vitserve: downloaded %s (%.1f MB in %.1f s, %.1f MB/s)\n", s->file,
                s->have / 1e6, el, rate / 1e6);
    }
}

static size_t on_body(char *buf, size_t size, size_t n, void *ud)
{
    struct sink *s = ud;
    size_t len = size * n;
    /* More than the hub announced: stop (a broken or hostile server must
     * not fill the disk); the size check below reports it. */
    if ((long long)len > s->total - s->have) {
        s->over = true;
        return 0;
    }
    if (fwrite(buf, 1, len, s->out) != len) return 0;
    s->have += (long long)len;
    double now = vs_now_ms() / 1000.0;
    if (s->tty && now - s->last > 0.2) {
        s->last = now;
        progress_line(s, false);
    }
    return len;
}

static bool file_sha256_hex(const char *path, char hex[65])
{
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
    unsigned char buf[1 << 16];
    size_t got;
    while ((got = fread(buf, 1, sizeof buf, f)) > 0) EVP_DigestUpdate(ctx, buf, got);
    bool ok = !ferror(f);
    fclose(f);
    unsigned char md[32];
    unsigned int mdlen = 32;
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    vs_hex(md, 32, hex);
    return ok;
}

static bool is_sha256_hex(const char *s)
{
    if (strlen(s) != 64) return false;
    for (; *s; s++)
        if (!isxdigit((unsigned char)*s)) return false;
    return true;
}

static enum vs_status mkdirs(const char *path, struct vs_err *err)
{
    char p[4096];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, 0755) != 0 && errno != EEXIST) goto fail;
        *s = '/';
    }
    if (mkdir(p, 0755) != 0 && errno != EEXIST) goto fail;
    return VS_OK;
fail:
    return vs_err_set(err, VS_IO, "cannot create %s: %s", p, strerror(errno));
}

/* Takes the lock of the blob etag, <cache>/.locks/models--org--name/<etag>.lock:
 * the file huggingface_hub locks for the same blob, with flock(2) as its
 * filelock does, so that vitserve and Python processes sharing one cache
 * (pods on one volume) write a blob's .incomplete file one at a time.
 * Waits while another process holds it (saying so on stderr); the kernel
 * releases the lock of a process that dies, so a lock file left behind
 * blocks nobody.  The lock is held until *fd is closed. */
static enum vs_status lock_blob(const struct fetch *f, const char *etag, const char *file,
                                int *fd, struct vs_err *err)
{
    enum vs_status st = mkdirs(f->locks, err);
    if (st != VS_OK) return st;
    char path[4400];
    snprintf(path, sizeof path, "%s/%s.lock", f->locks, etag);
    int d = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (d < 0)
        return vs_err_set(err, VS_IO, "cannot open the lock file %s: %s", path, strerror(errno));
    int r = flock(d, LOCK_EX | LOCK_NB);
    if (r != 0 && errno == EWOULDBLOCK) {
        fprintf(stderr, "vitserve: %s: another process is downloading it into this cache; "
                "waiting for it (lock %s)\n", file, path);
        while ((r = flock(d, LOCK_EX)) != 0 && errno == EINTR) {}
    }
    if (r != 0 && (errno == ENOLCK || errno == EOPNOTSUPP || errno == ENOSYS)) {
        /* A file system without locks (NFS without its lock daemon): go
         * on as before locks were taken, rather than not download at all. */
        fprintf(stderr, "vitserve: warning: cannot lock %s (%s): downloading %s without a "
                "lock; other processes must not download into this cache meanwhile\n", path,
                strerror(errno), file);
        r = 0;
    }
    if (r != 0) {
        int e = errno;
        close(d);
        return vs_err_set(err, VS_IO, "cannot lock %s: %s", path, strerror(e));
    }
    *fd = d;
    return VS_OK;
}

/* Downloads the blob h describes into part (resuming what is there), checks
 * it and renames it to blob.  *again: the transfer must be started over (a
 * cut connection, a server that ignored the Range): the caller does it once
 * it has released the blob's lock. */
static enum vs_status transfer(struct fetch *f, const struct head_info *h, const char *file,
                               const char *part, const char *blob, bool *again,
                               struct vs_err *err)
{
    struct stat sb;
    /* The size bounds the transfer (on_body stops past it): without
     * one, a broken server or proxy could fill the disk; huggingface_hub
     * refuses such a file too. */
    if (h->size < 0)
        return vs_err_set(err, VS_IO, "%s: %s/%s: the hub gave no size for the file (no "
                          "X-Linked-Size nor Content-Length); not downloaded", f->endpoint,
                          f->repo, file);
    /* Resume a partial download if one is there. */
    long long have = stat(part, &sb) == 0 ? (long long)sb.st_size : 0;
    if (have > h->size) {
        unlink(part);
        have = 0;
    }
    struct sink s = {.file = file, .have = have, .total = h->size,
                     .t0 = vs_now_ms() / 1000.0, .tty = isatty(2)};
    /* All bytes arrived before (stopped before the rename): nothing to
     * fetch; a Range request past the end would get 416. */
    bool complete = have > 0 && have == h->size;
    CURLcode rc = CURLE_OK;
    long status = 0;
    bool closed_ok = true;
    if (!complete) {
        s.out = fopen(part, have ? "ab" : "wb");
        if (!s.out) return vs_err_set(err, VS_IO, "cannot write %s: %s", part, strerror(errno));
        char range[64];
        CURL *c = f->curl;
        curl_easy_reset(c);
        curl_easy_setopt(c, CURLOPT_URL, h->url);  /* past any rename redirect */
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, f->headers);
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L);
        curl_easy_setopt(c, CURLOPT_MAXREDIRS, 5L);
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
        curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);   /* stalled for 60 s: give up */
        curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
        curl_easy_setopt(c, CURLOPT_USERAGENT, "vitserve/" VITSERVE_VERSION);
        curl_easy_setopt(c, CURLOPT_FAILONERROR, 1L);
        if (have > 0) {
            snprintf(range, sizeof range, "%lld-", have);
            curl_easy_setopt(c, CURLOPT_RANGE, range);
        }
        rc = curl_easy_perform(c);
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        closed_ok = fclose(s.out) == 0;
    }
    if ((rc == CURLE_OK || s.over) && have > 0 && status == 200) {
        /* The server ignored the range and sent everything: start over
         * (once the partial file is gone, the retry asks for no range,
         * so this cannot recur; a partial file that cannot be removed
         * would make it loop, hence the check). */
        if (unlink(part) != 0 && errno != ENOENT)
            return vs_err_set(err, VS_IO, "%s: cannot remove the partial download to start "
                              "over: %s", part, strerror(errno));
        *again = true;
        return VS_OK;
    }
    if (s.over) {
        unlink(part);
        return vs_err_set(err, VS_IO, "%s: %s/%s: the server sent more than the %lld bytes "
                          "the hub announced; the partial file was removed", f->endpoint,
                          f->repo, file, h->size);
    }
    bool cut = rc == CURLE_PARTIAL_FILE || rc == CURLE_RECV_ERROR ||
               rc == CURLE_GOT_NOTHING || rc == CURLE_OPERATION_TIMEDOUT;
    if (cut && f->retries < 3) {
        /* A cut connection: resume from what arrived, as huggingface_hub retries. */
        f->retries++;
        fprintf(stderr, "vitserve: %s: connection cut after %lld bytes (%s), resuming\n",
                file, s.have, curl_easy_strerror(rc));
        *again = true;
        return VS_OK;
    }
    if (rc != CURLE_OK) {
        if (rc == CURLE_HTTP_RETURNED_ERROR) return http_error(f, file, status, "", err);
        return vs_err_set(err, VS_IO, "%s: downloading %s/%s failed after %lld bytes (%s); "
                          "run again to resume", f->endpoint, f->repo, file, s.have,
                          curl_easy_strerror(rc));
    }
    if (!closed_ok) return vs_err_set(err, VS_IO, "cannot write %s: %s", part, strerror(errno));
    if (s.have != h->size)
        return vs_err_set(err, VS_IO, "%s/%s: got %lld bytes, the hub announced %lld; run again "
                          "to resume", f->repo, file, s.have, h->size);
    if (is_sha256_hex(h->etag)) {
        char hex[65];
        if (!file_sha256_hex(part, hex) || strcasecmp(hex, h->etag)) {
            unlink(part);
            return vs_err_set(err, VS_IO, "%s/%s: checksum mismatch: SHA-256 %s, the hub's "
                              "ETag says %s; the partial file was removed", f->repo, file,
                              hex, h->etag);
        }
    }
    f->retries = 0;
    if (rename(part, blob) != 0)
        return vs_err_set(err, VS_IO, "cannot rename %s: %s", part, strerror(errno));
    progress_line(&s, true);
    return VS_OK;
}

/* Fetches one file of the repo into blobs/ and links it from the snapshot.
 * optional: a 404 is not an error (*missing set instead).  commit: empty for
 * the first file (asked for at the revision, the commit it resolves to is
 * stored there); the others are asked for at that commit, so that a branch
 * that moves during the download cannot mix two commits in one snapshot. */
static enum vs_status fetch_file(struct fetch *f, const char *base, const char *file,
                                 bool optional, bool *missing, char *commit, size_t commit_n,
                                 struct vs_err *err)
{
    struct head_info h;
    if (missing) *missing = false;
    enum vs_status st = head(f, commit[0] ? commit : f->rev, file, &h, err);
    if (st == VS_NOT_FOUND && optional) {
        *missing = true;
        return VS_OK;
    }
    if (st != VS_OK) return st;
    if (h.commit[0] && !commit[0]) {
        /* It names the snapshot folder: a 40-hex commit (what hub.c looks
         * up), never a path such as "../x". */
        bool ok = strlen(h.commit) == 40;
        for (const char *p = h.commit; ok && *p; p++)
            ok = isdigit((unsigned char)*p) || (*p >= 'a' && *p <= 'f');
        if (!ok)
            return vs_err_set(err, VS_IO, "%s: %s: X-Repo-Commit '%.64s' is not a 40-hex commit",
                              f->endpoint, file, h.commit);
        snprintf(commit, commit_n, "%s", h.commit);
    }
    if (!commit[0])
        return vs_err_set(err, VS_IO, "%s: %s: the hub sent no X-Repo-Commit", f->endpoint, file);

    char blobs[4096], blob[4600], part[4700], snap[4200], link[4800];
    snprintf(blobs, sizeof blobs, "%s/blobs", base);
    snprintf(blob, sizeof blob, "%s/%s", blobs, h.etag);
    snprintf(part, sizeof part, "%s.incomplete", blob);
    snprintf(snap, sizeof snap, "%s/snapshots/%s", base, commit);
    snprintf(link, sizeof link, "%s/%s", snap, file);
    if ((st = mkdirs(blobs, err)) != VS_OK || (st = mkdirs(snap, err)) != VS_OK) return st;

    /* One process at a time per blob, from the check that it is missing to
     * the link (another may have completed it while this one waited). */
    int lock = -1;
    if ((st = lock_blob(f, h.etag, file, &lock, err)) != VS_OK) return st;
    bool again = false;
    struct stat sb;
    if (stat(blob, &sb) != 0) st = transfer(f, &h, file, part, blob, &again, err);
    if (st == VS_OK && !again) {
        /* snapshots/<commit>/<file> -> ../../blobs/<etag> (relative, as
         * huggingface_hub); a link that is already right is left alone:
         * another process that found the snapshot complete may be loading it. */
        char target[512], cur[512];
        snprintf(target, sizeof target, "../../blobs/%s", h.etag);
        ssize_t n = readlink(link, cur, sizeof cur);
        if (n < 0 || (size_t)n != strlen(target) || memcmp(cur, target, (size_t)n) != 0) {
            unlink(link);
            if (symlink(target, link) != 0)
                st = vs_err_set(err, VS_IO, "cannot link %s: %s", link, strerror(errno));
        }
    }
    close(lock);
    if (st == VS_OK && again)
        return fetch_file(f, base, file, optional, missing, commit, commit_n, err);
    return st;
}

static enum vs_status download(struct fetch *f, const char *base, char *dir, size_t dir_size,
                               struct vs_err *err)
{
    char commit[64] = "";
    bool missing = false;
    enum vs_status st = fetch_file(f, base, "config.json", false, NULL, commit, sizeof commit, err);
    if (st != VS_OK) return st;
    char snap[4200], path[4400];
    snprintf(snap, sizeof snap, "%s/snapshots/%s", base, commit);

    /* Refuse anything but a ViT classifier before fetching weights. */
    snprintf(path, sizeof path, "%s/config.json", snap);
    struct vs_ckpt_config cfg;
    if ((st = vs_ckpt_config_load(path, &cfg, err)) != VS_OK) {
        vs_err_prefix(err, "%s", f->repo);
        return st;
    }
    vs_ckpt_config_free(&cfg);

    if ((st = fetch_file(f, base, "preprocessor_config.json", true, &missing, commit,
                         sizeof commit, err)) != VS_OK)
        return st;
    if ((st = fetch_file(f, base, "model.safetensors", true, &missing, commit, sizeof commit,
                         err)) != VS_OK)
        return st;
    if (missing) {
        if ((st = fetch_file(f, base, "model.safetensors.index.json", true, &missing, commit,
                             sizeof commit, err)) != VS_OK)
            return st;
        if (missing)
            return vs_err_set(err, VS_UNSUPPORTED,
                              "%s@%s has no model.safetensors nor model.safetensors.index.json "
                              "(vitserve reads safetensors weights only)", f->repo, f->rev);
        snprintf(path, sizeof path, "%s/model.safetensors.index.json", snap);
        if ((st = vs_st_check_index_size(path, err)) != VS_OK) return st;
        json_error_t je;
        json_t *idx = json_load_file(path, 0, &je);
        json_t *wm = idx ? json_object_get(idx, "weight_map") : NULL;
        if (!json_is_object(wm)) {
            json_decref(idx);
            return vs_err_set(err, VS_BAD_INPUT, "%s: no weight_map object", path);
        }
        /* Each shard once, in order of first appearance. */
        const char *key;
        json_t *val;
        char seen[64][256];
        int nseen = 0;
        json_object_foreach(wm, key, val) {
            const char *shard = json_string_value(val);
            if (!shard || strchr(shard, '/') || !strcmp(shard, "..") || strlen(shard) >= 256) {
                json_decref(idx);
                return vs_err_set(err, VS_BAD_INPUT, "%s: tensor '%s': bad shard name", path, key);
            }
            bool dup = false;
            for (int i = 0; i < nseen && !dup; i++) dup = !strcmp(seen[i], shard);
            if (dup) continue;
            if (nseen == 64) {
                json_decref(idx);
                return vs_err_set(err, VS_UNSUPPORTED, "%s: more than 64 shards", path);
            }
            snprintf(seen[nseen++], 256, "%s", shard);
            if ((st = fetch_file(f, base, shard, false, NULL, commit, sizeof commit, err)) != VS_OK) {
                json_decref(idx);
                return st;
            }
        }
        json_decref(idx);
    }
    /* refs/<rev> -> commit, so that the next start finds it offline. */
    if (strcmp(f->rev, commit)) {
        snprintf(path, sizeof path, "%s/refs/%s", base, f->rev);
        char *slash = strrchr(path, '/');
        *slash = '\0';
        if ((st = mkdirs(path, err)) != VS_OK) return st;
        *slash = '/';
        /* A temporary file of its own: other processes downloading into
         * this cache write the same ref at the same time. */
        char tmp[4500];
        snprintf(tmp, sizeof tmp, "%s.XXXXXX", path);
        int fd = mkstemp(tmp);
        FILE *rf = fd >= 0 && fchmod(fd, 0644) == 0 ? fdopen(fd, "w") : NULL;
        bool ok = rf && fputs(commit, rf) >= 0;
        if (rf) ok = fclose(rf) == 0 && ok;
        else if (fd >= 0) close(fd);
        if (!ok || rename(tmp, path) != 0) {
            int e = errno;
            if (fd >= 0) unlink(tmp);
            return vs_err_set(err, VS_IO, "cannot write %s: %s", path, strerror(e));
        }
    }
    if ((size_t)snprintf(dir, dir_size, "%s", snap) >= dir_size)
        return vs_err_set(err, VS_BAD_INPUT, "%s: path too long", snap);
    return VS_OK;
}

enum vs_status vs_hub_download(const char *root, const char *repo, const char *rev,
                               char *dir, size_t dir_size, struct vs_err *err)
{
    char base[4096];
    if (!vs_hub_repo_dir(root, repo, base, sizeof base))
        return vs_err_set(err, VS_BAD_INPUT, "%.200s...: the hub cache path is too long for %s",
                          root, repo);
    static bool curl_ready;
    if (!curl_ready) {
        if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
            return vs_err_set(err, VS_IO, "cannot initialise libcurl");
        curl_ready = true;
    }
    struct fetch f = {0};
    char locks_root[4200];
    snprintf(locks_root, sizeof locks_root, "%s/.locks", root);
    if (!vs_hub_repo_dir(locks_root, repo, f.locks, sizeof f.locks))
        return vs_err_set(err, VS_BAD_INPUT, "%.200s...: the hub cache path is too long for %s",
                          root, repo);
    snprintf(f.endpoint, sizeof f.endpoint, "%s", vs_hub_endpoint());
    size_t el = strlen(f.endpoint);
    while (el > 0 && f.endpoint[el - 1] == '/') f.endpoint[--el] = '\0';
    snprintf(f.repo, sizeof f.repo, "%s", repo);
    snprintf(f.rev, sizeof f.rev, "%s", rev);
    f.curl = curl_easy_init();
    if (!f.curl) return vs_err_set(err, VS_NOMEM, "cannot create a libcurl handle");
    char tok[512], auth[600];
    read_token(tok, sizeof tok);
    f.headers = curl_slist_append(NULL, "Accept-Encoding: identity");
    if (tok[0]) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", tok);
        f.headers = curl_slist_append(f.headers, auth);
    }
    fprintf(stderr, "vitserve: downloading %s@%s from %s into %s\n", repo, rev, f.endpoint, base);
    enum vs_status st = download(&f, base, dir, dir_size, err);
    curl_slist_free_all(f.headers);
    curl_easy_cleanup(f.curl);
    return st;
}
