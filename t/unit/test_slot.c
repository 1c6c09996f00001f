/*
 * Unit tests: Redis Cluster key slots.  The expected slots were read from
 * "redis-cli CLUSTER KEYSLOT" against redis-server 7.0.15 started with
 * --cluster-enabled yes, then frozen here.
 */

#include "tap.h"
#include "psd_slot.h"


static unsigned
slot(const char *key)
{
    return psd_slot(key, strlen(key));
}


static void
hashed(const char *key, const char *want)
{
    size_t       n;
    const char  *p;
    char         buf[64];

    p = psd_slot_hashed(key, strlen(key), &n);
    snprintf(buf, sizeof(buf), "%.*s", (int) n, p);
    is_str(buf, want, "hashed part of \"%s\"", key);
}


int
main(void)
{
    static const struct {
        const char  *key;
        unsigned     slot;
    } redis[] = {
        { "123456789", 12739 },
        { "foo", 12182 },
        { "bar", 5061 },
        { "{user1000}.following", 3443 },
        { "{user1000}.followers", 3443 },
        { "user1000", 3443 },
        { "foo{}{bar}", 8363 },
        { "foo{{bar}}zap", 4015 },
        { "{bar", 4015 },
        { "foo{bar}{zap}", 5061 },
        { "foo{", 7673 },
        { "{}", 15257 },
        { "", 0 },
        { "a{b", 13340 },
        { "}{x}", 16287 },
        { "psd:{lim:z:k}", 8757 },
        { "lim:z:k", 8757 },
        { "{a}{b}", 15495 },
        { "x{}y{z}", 15453 },
    };

    size_t  i;

    is_int(psd_crc16((const unsigned char *) "123456789", 9), 0x31c3,
           "CRC16/XMODEM check value");
    is_int(psd_crc16((const unsigned char *) "", 0), 0, "CRC16 of nothing");
    is_int(psd_crc16((const unsigned char *) "\0", 1), 0,
           "CRC16 of a zero byte");
    is_int(psd_crc16((const unsigned char *) "\xff", 1), 0x1ef0,
           "CRC16 of 0xff");

    for (i = 0; i < sizeof(redis) / sizeof(redis[0]); i++) {
        is_int(slot(redis[i].key), redis[i].slot,
               "slot of \"%s\" as redis-cli CLUSTER KEYSLOT says",
               redis[i].key);
    }

    is_int(slot("{user1000}.following"), slot("{user1000}.followers"),
           "same hash tag, same slot");
    is_int(slot("foo{bar}{zap}"), slot("bar"), "first tag wins");
    is_int(slot("foo{{bar}}zap"), slot("{bar"), "tag may contain '{'");
    is_int(slot("}{x}"), slot("x"), "a '}' before the '{' is ignored");

    hashed("foo", "foo");
    hashed("foo{}{bar}", "foo{}{bar}");
    hashed("foo{{bar}}zap", "{bar");
    hashed("foo{bar}{zap}", "bar");
    hashed("foo{", "foo{");
    hashed("{", "{");
    hashed("}", "}");
    hashed("{a}", "a");

    is_int(psd_slot("a\0{b}", 5), slot("b"), "NUL bytes are key bytes");
    ok(psd_slot("\xff\xfe{\x80}", 5) < PSD_SLOT_COUNT, "slot is in range");

    return done_testing();
}
