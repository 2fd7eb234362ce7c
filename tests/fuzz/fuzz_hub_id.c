/* fuzz_hub_id.c: vs_hub_id_valid() (src/model/hub.c), the check that
 * decides whether a --model argument is a Hugging Face hub id
 * "org/name[@rev]" — the string then becomes cache folder names and a
 * download URL, so a valid id must never be able to climb out of the
 * cache folder or smuggle URL syntax.
 *
 * The input (up to 1023 bytes, cut at the first NUL) is the argument.
 * Oracle for an accepted id: only [A-Za-z0-9_.-/@] bytes, one '@' at
 * most, at most one '/' before it (none leading, none trailing), no ".."
 * and no "//" anywhere, repo part 1..255 bytes, no "." part in the
 * revision.  Called from one thread.
 */
#include <stdbool.h>

#include "fuzz_util.h"
#include "model/model_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char s[1024];
    size_t n = size < sizeof s - 1 ? size : sizeof s - 1;
    memcpy(s, data, n);
    s[n] = '\0';
    n = strlen(s);
    if (!vs_hub_id_valid(s)) return 0;

    const char *at = strchr(s, '@');
    const size_t rl = at ? (size_t)(at - s) : n;
    VSF_CHECK(rl >= 1 && rl <= 255, "'%s': repo of %zu bytes", s, rl);
    VSF_CHECK(!at || !strchr(at + 1, '@'), "'%s': two '@'", s);
    VSF_CHECK(!strstr(s, "..") && !strstr(s, "//"), "'%s': '..' or '//'", s);
    VSF_CHECK(s[0] != '/' && s[rl - 1] != '/' && s[n - 1] != '/', "'%s': leading/trailing '/'", s);
    int slashes = 0;
    for (size_t i = 0; i < n; i++) {
        const char c = s[i];
        VSF_CHECK((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-' || c == '/' || c == '@',
                  "'%s': byte 0x%02x", s, (unsigned)(unsigned char)c);
        if (i < rl && c == '/') slashes++;
    }
    VSF_CHECK(slashes <= 1, "'%s': %d '/' in the repo part", s, slashes);
    if (at) {   /* no "." part in the revision ("@.", "@main/.", "@./main") */
        for (const char *p = at + 1; *p;) {
            const char *e = strchr(p, '/');
            const size_t len = e ? (size_t)(e - p) : strlen(p);
            VSF_CHECK(!(len == 1 && p[0] == '.'), "'%s': a '.' part in the revision", s);
            p += len + (e != NULL);
        }
    }
    return 0;
}
