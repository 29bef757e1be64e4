/* Big-endian load/store for on-disk fields (qcow2 is big-endian throughout). */
#ifndef BV_UTIL_ENDIAN_H
#define BV_UTIL_ENDIAN_H

#include <endian.h>
#include <stdint.h>
#include <string.h>

static inline uint16_t ld_be16(const void *p) { uint16_t v; memcpy(&v, p, 2); return be16toh(v); }
static inline uint32_t ld_be32(const void *p) { uint32_t v; memcpy(&v, p, 4); return be32toh(v); }
static inline uint64_t ld_be64(const void *p) { uint64_t v; memcpy(&v, p, 8); return be64toh(v); }
static inline void st_be16(void *p, uint16_t v) { v = htobe16(v); memcpy(p, &v, 2); }
static inline void st_be32(void *p, uint32_t v) { v = htobe32(v); memcpy(p, &v, 4); }
static inline void st_be64(void *p, uint64_t v) { v = htobe64(v); memcpy(p, &v, 8); }

#endif
