#include "wire.h"

void ejlb_put_lb(uint8_t *dst, int version, uint64_t tick, uint16_t entropy, uint16_t slot_select)
{
    dst[EJLB_LB_OFF_MAGIC] = EJLB_LB_MAGIC0;
    dst[EJLB_LB_OFF_MAGIC + 1] = EJLB_LB_MAGIC1;
    dst[EJLB_LB_OFF_VERSION] = (uint8_t)version;
    dst[EJLB_LB_OFF_NEXT_PROTO] = EJLB_LB_NEXT_PROTO_RE;
    ejlb_be16(dst + EJLB_LB_OFF_SLOT_SELECT, version == EJLB_LB_V2 ? 0 : slot_select);
    ejlb_be16(dst + EJLB_LB_OFF_PORT_SELECT, entropy);
    ejlb_be64(dst + EJLB_LB_OFF_TICK, tick);
}

void ejlb_put_re(uint8_t *dst, uint16_t data_id, uint32_t offset, uint32_t length, uint64_t event_number)
{
    dst[EJLB_RE_OFF_VERSION] = EJLB_RE_BYTE0;
    dst[EJLB_RE_OFF_RESERVED] = 0;
    ejlb_be16(dst + EJLB_RE_OFF_DATA_ID, data_id);
    ejlb_be32(dst + EJLB_RE_OFF_OFFSET, offset);
    ejlb_be32(dst + EJLB_RE_OFF_LENGTH, length);
    ejlb_be64(dst + EJLB_RE_OFF_EVENT_NUMBER, event_number);
}

void ejlb_put_sync(uint8_t *dst, uint32_t event_src_id, uint64_t event_number, uint32_t rate_hz,
                   uint64_t unix_time_ns)
{
    dst[EJLB_SYNC_OFF_MAGIC] = EJLB_SYNC_MAGIC0;
    dst[EJLB_SYNC_OFF_MAGIC + 1] = EJLB_SYNC_MAGIC1;
    dst[EJLB_SYNC_OFF_VERSION] = EJLB_SYNC_VERSION;
    dst[EJLB_SYNC_OFF_RESERVED] = 0;
    ejlb_be32(dst + EJLB_SYNC_OFF_EVENT_SRC_ID, event_src_id);
    ejlb_be64(dst + EJLB_SYNC_OFF_EVENT_NUMBER, event_number);
    ejlb_be32(dst + EJLB_SYNC_OFF_AVG_EVENT_RATE_HZ, rate_hz);
    ejlb_be64(dst + EJLB_SYNC_OFF_UNIX_TIME_NS, unix_time_ns);
}
