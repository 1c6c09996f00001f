/*
 * Copyright (C) ngx_psd_module authors
 *
 * Redis Cluster key slots: CRC16 (XMODEM) of the key, or of its hash tag,
 * modulo 16384.  The module uses it to check at configuration time that
 * the keys one script touches share a slot, and to group a request's
 * fraud-rule keys by slot.  nginx-free.
 */

#ifndef PSD_SLOT_H
#define PSD_SLOT_H

#include <stddef.h>
#include <stdint.h>

#define PSD_SLOT_COUNT  16384

/* CRC16-CCITT as XMODEM computes it: poly 0x1021, init 0, no reflection */
uint16_t psd_crc16(const unsigned char *p, size_t len);

/*
 * the part of a key Redis Cluster hashes: the content between the first
 * '{' and the first '}' after it when that content is non-empty,
 * otherwise the whole key
 */
const char *psd_slot_hashed(const char *key, size_t len, size_t *hashed_len);

/* the key's slot, 0 .. PSD_SLOT_COUNT - 1 */
unsigned psd_slot(const char *key, size_t len);

#endif
