/*
 * crc32c.h - CRC-32C (Castagnoli), as used to frame decision-log records.
 */
#ifndef DTX_CRC32C_H
#define DTX_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/*
 * Extends crc (0 to start) over n bytes at p and returns the new value.
 * crc32c(0, "123456789", 9) == 0xE3069283.
 */
uint32_t crc32c(uint32_t crc, const void *p, size_t n);

/*
 * The register arithmetic behind checksums of many byte ranges of one buffer, each in
 * O(1) once the buffer's prefixes are known (the decision-log reader, looking for a valid
 * frame at every byte after a damaged one). A register is the CRC state without the
 * initial and final inversion.
 *
 * crc32c_prefixes fills reg[0..n]: reg[i] is the register after p[0..i), from 0.
 * crc32c_zeros(n) is what n zero bytes do to a register; crc32c_apply(op, r) applies it.
 * Then the register over p[a..b) is reg[b] ^ crc32c_apply(crc32c_zeros(b - a), reg[a]),
 * and crc32c(c, p + a, b - a) == ~(crc32c_apply(zeros, ~c ^ reg[a]) ^ reg[b]).
 */
void crc32c_prefixes(const void *p, size_t n, uint32_t *reg);
uint32_t crc32c_zeros(uint64_t n);
uint32_t crc32c_apply(uint32_t op, uint32_t reg);

#endif
