/*
 * crc32c.c - table-driven CRC-32C (reflected polynomial 0x82F63B78),
 * slicing by 8 bytes.
 *
 * The tables are computed once, on first use, under pthread_once, so the
 * function is safe from any thread.
 */
#include "dtx/crc32c.h"

#include <pthread.h>

#define POLY 0x82F63B78u

static uint32_t crc_table[8][256];
static uint32_t x_pow2[64]; /* x^(2^k) mod the polynomial, reflected (bit 31 is x^0) */
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

/* a * b mod the polynomial, both reflected: bit 31 is the coefficient of x^0. */
static uint32_t gf2_mul(uint32_t a, uint32_t b)
{
    uint32_t p = 0;

    for (uint32_t m = 1u << 31; m; m >>= 1) {
        if (a & m)
            p ^= b;
        b = (b & 1) ? (b >> 1) ^ POLY : b >> 1; /* b * x */
    }
    return p;
}

static void crc_table_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;

        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
    }
    x_pow2[0] = 1u << 30; /* x */
    for (int k = 1; k < 64; k++)
        x_pow2[k] = gf2_mul(x_pow2[k - 1], x_pow2[k - 1]);
}

uint32_t crc32c(uint32_t crc, const void *p, size_t n)
{
    const unsigned char *s = p;

    pthread_once(&crc_once, crc_table_init);
    crc = ~crc;
    while (n >= 8) {
        uint32_t lo = crc ^ ((uint32_t)s[0] | (uint32_t)s[1] << 8 | (uint32_t)s[2] << 16 |
                             (uint32_t)s[3] << 24);
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
              crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^ crc_table[3][s[4]] ^
              crc_table[2][s[5]] ^ crc_table[1][s[6]] ^ crc_table[0][s[7]];
        s += 8;
        n -= 8;
    }
    while (n--)
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *s++) & 0xff];
    return ~crc;
}

void crc32c_prefixes(const void *p, size_t n, uint32_t *reg)
{
    const unsigned char *s = p;
    uint32_t r = 0;

    pthread_once(&crc_once, crc_table_init);
    reg[0] = 0;
    for (size_t i = 0; i < n; i++) {
        r = (r >> 8) ^ crc_table[0][(r ^ s[i]) & 0xff];
        reg[i + 1] = r;
    }
}

/* n zero bytes multiply a register by x^(8n): that power, by squaring. */
uint32_t crc32c_zeros(uint64_t n)
{
    uint32_t op = 1u << 31; /* x^0 */

    pthread_once(&crc_once, crc_table_init);
    n <<= 3; /* bits; n is a size in memory, far below 2^61 */
    for (int k = 0; n; k++, n >>= 1) {
        if (n & 1)
            op = gf2_mul(op, x_pow2[k]);
    }
    return op;
}

uint32_t crc32c_apply(uint32_t op, uint32_t reg)
{
    return gf2_mul(op, reg);
}
