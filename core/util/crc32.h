/*
 * CRC-32 (IEEE 802.3, reflected: zlib's crc32()), fast.  zlib 1.2's
 * crc32_z runs at about 2 GB/s here, which made the CRC maps of backups and
 * restores cost as much CPU as the copy itself; on x86-64 CPUs with
 * PCLMULQDQ and SSE4.1 the bulk is folded with carry-less multiplies
 * (Intel's "Fast CRC Computation for Generic Polynomials Using PCLMULQDQ",
 * as Chromium's zlib does), about ten times faster; the tail and other CPUs
 * use zlib.  Results equal crc32_z's for every input (tests/unit/test_crc32.c).
 */
#ifndef BV_UTIL_CRC32_H
#define BV_UTIL_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* As zlib's crc32_z(crc, buf, len): start with crc = 0. */
uint32_t bv_crc32(uint32_t crc, const void *buf, size_t len);

#endif
