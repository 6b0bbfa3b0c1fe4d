/* Header encoders of the C core. Offsets and constants come from ejlb_wire.h, which is generated
 * from src/ejlb/wire.py; tests/test_native_wire.py proves the bytes equal ejlb.wire's. */
#ifndef EJLB_WIRE_FN_H
#define EJLB_WIRE_FN_H
#include <stdint.h>
#include <string.h>
#include "ejlb_wire.h"

static inline void ejlb_be16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = (uint8_t)v; }
static inline void ejlb_be32(uint8_t *p, uint32_t v) { ejlb_be16(p, v >> 16); ejlb_be16(p + 2, (uint16_t)v); }
static inline void ejlb_be64(uint8_t *p, uint64_t v) { ejlb_be32(p, v >> 32); ejlb_be32(p + 4, (uint32_t)v); }
static inline uint16_t ejlb_rd16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t ejlb_rd32(const uint8_t *p) { return (uint32_t)ejlb_rd16(p) << 16 | ejlb_rd16(p + 2); }
static inline uint64_t ejlb_rd64(const uint8_t *p) { return (uint64_t)ejlb_rd32(p) << 32 | ejlb_rd32(p + 4); }

/* Header validity: the one rule written at the top of src/ejlb/wire.py (magic, version, next
 * protocol, RE bytes 0 and 1; v2's reserved field is ignored); the caller has checked that the bytes
 * are there. */
static inline int ejlb_lb_version_ok(int v) { return v == EJLB_LB_V2 || v == EJLB_LB_V3; }
static inline int ejlb_lb_ok(const uint8_t *p)
{
    return p[EJLB_LB_OFF_MAGIC] == EJLB_LB_MAGIC0 && p[EJLB_LB_OFF_MAGIC + 1] == EJLB_LB_MAGIC1 &&
           ejlb_lb_version_ok(p[EJLB_LB_OFF_VERSION]) && p[EJLB_LB_OFF_NEXT_PROTO] == EJLB_LB_NEXT_PROTO_RE;
}
static inline int ejlb_re_ok(const uint8_t *p)
{
    return p[EJLB_RE_OFF_VERSION] == EJLB_RE_BYTE0 && p[EJLB_RE_OFF_RESERVED] == 0;
}

/* EJLB_CDEF_BEGIN */
void ejlb_put_lb(uint8_t *dst, int version, uint64_t tick, uint16_t entropy, uint16_t slot_select);
void ejlb_put_re(uint8_t *dst, uint16_t data_id, uint32_t offset, uint32_t length, uint64_t event_number);
void ejlb_put_sync(uint8_t *dst, uint32_t event_src_id, uint64_t event_number, uint32_t rate_hz,
                   uint64_t unix_time_ns);
/* EJLB_CDEF_END */
#endif
