/*
 * libFuzzer target: signed links and CIDR text.
 *
 * Input: QUERY "\n" PATH "\n" CLIENT.  The query is parsed and verified
 * against PATH and CLIENT; whatever parses is signed again and must verify;
 * the whole input, and CLIENT, go to the strict address parsers, whose
 * output must format back to the same text.
 *
 * Build and run (see t/fuzz/corpus/link for seeds, signed with kid "fz"):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Ingx_psd_module \
 *       t/fuzz/fuzz_link.c ngx_psd_module/psd_*.c -lcrypto -ljansson \
 *       -o build/fuzz/fuzz_link
 *   build/fuzz/fuzz_link -max_total_time=60 t/fuzz/corpus/link
 */

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "psd_cidr.h"
#include "psd_link.h"


#define check(cond)  do { if (!(cond)) __builtin_trap(); } while (0)


static const unsigned char  fuzz_key[32] = {
    'p', 's', 'd', '-', 'l', 'i', 'n', 'k', ' ', 'f', 'u', 'z', 'z', ' ',
    'k', 'e', 'y', ',', ' ', '3', '2', ' ', 'b', 'y', 't', 'e', 's', ' ',
    'l', 'o', 'n', 'g'
};

static const psd_link_key_t  fuzz_keys[1] = {
    { "fz", 2, fuzz_key, sizeof(fuzz_key) }
};


static void
fuzz_text(const char *text, size_t len)
{
    char        buf[PSD_CIDR_TEXT_MAX + 1];
    size_t      n;
    psd_ip_t    ip;
    psd_cidr_t  cidr;

    if (psd_cidr_parse(&cidr, text, len) == 0) {
        n = psd_cidr_format(buf, &cidr);
        check(n == len && memcmp(buf, text, n) == 0);
        check(psd_cidr_match(&cidr, &cidr.net) == 1);
    }

    if (psd_ip_parse(&ip, text, len) == 0) {
        n = psd_ip_format(buf, &ip);
        check(n == len && memcmp(buf, text, n) == 0);
        check(psd_cidr_parse(&cidr, text, len) == 0);
        check(psd_cidr_match(&cidr, &ip) == 1);
    }
}


/* what parsed must sign, and what signed must parse to the same fields */
static void
fuzz_resign(const psd_link_t *link, const char *path, size_t path_len,
    const psd_ip_t *client)
{
    long               n;
    char               q[PSD_LINK_QUERY_MAX];
    const char        *err;
    psd_link_t         again;
    psd_link_conf_t    conf;
    psd_link_params_t  p;
    psd_link_status_e  rc;

    memset(&p, 0, sizeof(p));
    p.kid = link->kid;
    p.kid_len = link->kid_len;
    p.key = fuzz_key;
    p.key_len = sizeof(fuzz_key);
    p.exp = link->exp;
    p.id = link->id;
    p.id_len = link->id_len;
    p.order = link->order;
    p.order_len = link->order_len;
    p.ip = link->ip;
    p.ip_len = link->ip_len;
    p.limit = link->limit;

    if (link->scope_len) {
        p.prefix = 1;
        p.path = link->scope;
        p.path_len = link->scope_len;

    } else {
        p.path = path;
        p.path_len = path_len;
    }

    n = psd_link_sign(&p, q, sizeof(q), &err);

    if (n < 0) {
        /* only an exact path the signer refuses may fail */
        check(!link->scope_len);
        p.path = "/fuzz";
        p.path_len = 5;
        path = p.path;
        path_len = p.path_len;
        n = psd_link_sign(&p, q, sizeof(q), &err);
    }

    check(n > 0 && (size_t) n < sizeof(q) && q[n] == '\0');
    check(psd_link_parse(&again, q, n) == PSD_LINK_OK);

    check(again.kid_len == link->kid_len
          && memcmp(again.kid, link->kid, link->kid_len) == 0);
    check(again.id_len == link->id_len
          && memcmp(again.id, link->id, link->id_len) == 0);
    check(again.order_len == link->order_len
          && memcmp(again.order, link->order, link->order_len) == 0);
    check(again.scope_len == link->scope_len
          && memcmp(again.scope, link->scope, link->scope_len) == 0);
    check(again.ip_len == link->ip_len
          && memcmp(again.ip, link->ip, link->ip_len) == 0);
    check(again.exp == link->exp && again.limit == link->limit);

    /* signed under kid "fz" only if the link said so: use its own kid */
    conf.keys = &(psd_link_key_t) { link->kid, link->kid_len, fuzz_key,
                                    sizeof(fuzz_key) };
    conf.nkeys = 1;
    conf.now = link->exp;
    conf.skew = 0;
    conf.max_ttl = 0;

    rc = psd_link_verify(&again, &conf, q, n, path, path_len, client);

    check(rc == PSD_LINK_OK || rc == PSD_LINK_WRONG_CLIENT
          || (link->scope_len && rc == PSD_LINK_WRONG_PATH));

    /* one second later it is expired, whatever else is wrong after it */
    if (link->exp < 999999999999LL) {
        conf.now = link->exp + 1;
        rc = psd_link_verify(&again, &conf, q, n, path, path_len, client);
        check(rc == PSD_LINK_EXPIRED);
    }

    /* and a link reaching further ahead than max_ttl is refused */
    if (link->exp >= 2) {
        conf.now = 0;
        conf.max_ttl = 1;
        rc = psd_link_verify(&again, &conf, q, n, path, path_len, client);
        check(rc == PSD_LINK_INVALID);
    }
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char               enc[3 * 256 + 1], canon[8192];
    long               n;
    size_t             qlen, plen, clen;
    psd_ip_t           client, *cp;
    psd_link_t         link;
    const char        *query, *path, *ctext, *nl;
    psd_link_conf_t    conf;
    psd_link_status_e  rc;

    fuzz_text((const char *) data, size);

    query = (const char *) data;
    nl = memchr(query, '\n', size);
    qlen = nl ? (size_t) (nl - query) : size;

    path = nl ? nl + 1 : query + size;
    nl = memchr(path, '\n', query + size - path);
    plen = nl ? (size_t) (nl - path) : (size_t) (query + size - path);

    ctext = nl ? nl + 1 : path + plen;
    clen = query + size - ctext;

    fuzz_text(ctext, clen);

    cp = psd_ip_parse(&client, ctext, clen) == 0 ? &client : NULL;

    conf.keys = fuzz_keys;
    conf.nkeys = 1;
    conf.now = 1767222000;
    conf.skew = 60;
    conf.max_ttl = 86400 * 30;

    rc = psd_link_verify(&link, &conf, query, qlen, path, plen, cp);
    check(strcmp(psd_link_status_name(rc), "unknown") != 0);

    rc = psd_link_parse(&link, query, qlen);

    /* parsed or not, every field is a clean string of its length */
    check(link.kid_len <= PSD_LINK_KID_MAX
          && strlen(link.kid) == link.kid_len);
    check(link.id_len <= PSD_LINK_ID_MAX && strlen(link.id) == link.id_len);
    check(link.order_len <= PSD_LINK_ORDER_MAX
          && strlen(link.order) == link.order_len);
    check(link.scope_len <= PSD_LINK_SCOPE_MAX
          && strlen(link.scope) == link.scope_len);
    check(link.ip_len <= PSD_CIDR_TEXT_MAX && strlen(link.ip) == link.ip_len);

    if (rc == PSD_LINK_OK) {
        check(link.kid_len >= 1 && link.id_len >= 1);
        check(link.exp >= 0 && link.exp <= 999999999999LL);
        check(link.limit <= PSD_LINK_LIMIT_MAX);

        n = psd_link_canonical(&link, path, plen, canon, sizeof(canon));
        check(n == -1 || (n > 11 && memcmp(canon, "psd-link-v1", 11) == 0));

        fuzz_resign(&link, path, plen, cp);
    }

    if (plen <= 256) {
        n = psd_link_encode_path(enc, sizeof(enc), path, plen);
        check(n >= (long) plen && enc[n] == '\0');
    }

    return 0;
}
