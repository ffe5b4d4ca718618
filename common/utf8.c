/*
 * utf8.c - UTF-8 well-formedness, after RFC 3629's table of valid byte
 * sequences (section 4). Stateless; safe from any thread.
 */
#include "dtx/utf8.h"
#include "dtx/xalloc.h"

#include <stdlib.h>
#include <string.h>

size_t utf8_seq_len(const unsigned char *p, size_t n)
{
    size_t k = p[0] >= 0xf0 && p[0] <= 0xf4  ? 4
               : p[0] >= 0xe0 && p[0] < 0xf0 ? 3
               : p[0] >= 0xc2 && p[0] < 0xe0 ? 2
                                             : 0;

    if (k == 0 || k > n)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    }
    if ((k == 3 && p[0] == 0xe0 && p[1] < 0xa0) || (k == 3 && p[0] == 0xed && p[1] >= 0xa0) ||
        (k == 4 && p[0] == 0xf0 && p[1] < 0x90) || (k == 4 && p[0] == 0xf4 && p[1] >= 0x90))
        return 0; /* overlong, a surrogate, or past U+10FFFF */
    return k;
}

size_t utf8_invalid_at(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    while (i < n) {
        size_t k = p[i] < 0x80 ? 1 : utf8_seq_len(p + i, n - i);

        if (k == 0)
            return i;
        i += k;
    }
    return n;
}

char *utf8_sanitized(const char *s)
{
    size_t n = strlen(s), used = 0;
    char *out = xmalloc(3 * n + 1); /* each bad byte becomes 3 bytes (EF BF BD) */

    for (size_t i = 0; i < n;) {
        size_t k =
            (unsigned char)s[i] < 0x80 ? 1 : utf8_seq_len((const unsigned char *)s + i, n - i);

        if (k == 0) {
            memcpy(out + used, "\xef\xbf\xbd", 3);
            used += 3;
            i++;
            continue;
        }
        memcpy(out + used, s + i, k);
        used += k;
        i += k;
    }
    out[used] = '\0';
    return out;
}
