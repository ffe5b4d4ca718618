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

#endif
