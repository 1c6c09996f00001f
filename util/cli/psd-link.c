/*
 * Copyright (C) ngx_psd_module authors
 *
 * util/psd-link: signs and verifies download links (docs/link-format.md)
 * with the same code the nginx module runs.
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <hiredis/hiredis.h>

#include "psd_crypto.h"
#include "psd_link.h"


/* as nginx's psd_link_key: a key is a few dozen bytes, not a file */
#define PSD_KEY_FILE_MAX  1024
#define PSD_LINK_ID_LEN   22


typedef struct {
    const char     *key_file;
    const char     *kid;
    const char     *path;
    const char     *order;
    const char     *ip;
    const char     *id;
    const char     *url;
    const char     *client;
    const char     *ttl;
    const char     *now;
    const char     *skew;
    const char     *max_ttl;
    const char     *limit;
    int             prefix;
} psd_opts_t;


static const char  usage[] =
"usage: psd-link sign --key FILE --kid ID --path PATH --ttl SECONDS\n"
"                     [--prefix] [--limit N] [--order ID] [--ip CIDR]\n"
"                     [--id ID] [--now T]\n"
"       psd-link verify --key FILE --kid ID --url 'PATH?QUERY'\n"
"                     [--client IP] [--now T] [--skew S] [--max-ttl S]\n"
"       psd-link revoke (--link ID | --order ID) [--redis HOST:PORT]\n"
"                     [--password-file FILE] [--db N] [--ttl SECONDS]\n"
"       psd-link --help\n"
"\n"
"sign     prints the signed link, percent-encoded path '?' query, on its\n"
"         last line.  --path is the decoded path; with --prefix it is a\n"
"         prefix scope ending in '/' that opens every path below it, and\n"
"         the printed link points at the prefix itself.  The link id is\n"
"         22 random base62 characters unless --id is given.  --ttl sets\n"
"         psd_exp to now + SECONDS.\n"
"verify   prints the status (ok, malformed, unknown_key, invalid,\n"
"         expired, wrong_path, wrong_client) and exits 0 for ok, 1\n"
"         otherwise.  The path of --url is percent-decoded but not\n"
"         normalized (no '.', '..' or '//' resolution) and may not hold\n"
"         %2F or %00: pass what nginx would see.  --skew and --max-ttl\n"
"         default to 0 (none); --now to the current time.\n"
"\n"
"--key FILE  the raw key bytes, at least 32 (trailing newlines are\n"
"            stripped); its kid is --kid.\n"
"Errors go to stderr with exit status 2.  See docs/link-format.md.\n";


static void
die(const char *fmt, ...)
{
    va_list  args;

    fputs("psd-link: ", stderr);
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
    fputc('\n', stderr);

    exit(2);
}


/* decimal, digits only: "-5", "1e3" and "" are mistakes, not numbers */
static long long
number(const char *name, const char *s, long long min, long long max)
{
    long long    v;
    const char  *p;

    if (*s == '\0' || strlen(s) > 18) {
        die("%s: not a number: \"%s\"", name, s);
    }

    v = 0;

    for (p = s; *p; p++) {
        if (*p < '0' || *p > '9') {
            die("%s: not a number: \"%s\"", name, s);
        }
        v = v * 10 + (*p - '0');
    }

    if (v < min || v > max) {
        die("%s: %lld is outside %lld..%lld", name, v, min, max);
    }

    return v;
}


static void
parse_opts(psd_opts_t *o, int argc, char **argv, const char *cmd)
{
    int          i, k;
    size_t       n;
    const char  *arg, *eq, *val;

    static const struct {
        const char  *name;
        size_t       off;
    } names[] = {
        { "key",     offsetof(psd_opts_t, key_file) },
        { "kid",     offsetof(psd_opts_t, kid) },
        { "path",    offsetof(psd_opts_t, path) },
        { "order",   offsetof(psd_opts_t, order) },
        { "ip",      offsetof(psd_opts_t, ip) },
        { "id",      offsetof(psd_opts_t, id) },
        { "url",     offsetof(psd_opts_t, url) },
        { "client",  offsetof(psd_opts_t, client) },
        { "ttl",     offsetof(psd_opts_t, ttl) },
        { "now",     offsetof(psd_opts_t, now) },
        { "skew",    offsetof(psd_opts_t, skew) },
        { "max-ttl", offsetof(psd_opts_t, max_ttl) },
        { "limit",   offsetof(psd_opts_t, limit) }
    };

    memset(o, 0, sizeof(psd_opts_t));

    for (i = 0; i < argc; i++) {
        arg = argv[i];

        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            fputs(usage, stdout);
            exit(0);
        }

        if (strncmp(arg, "--", 2) != 0) {
            die("%s: unexpected argument \"%s\" (see --help)", cmd, arg);
        }

        arg += 2;

        if (strcmp(arg, "prefix") == 0) {
            o->prefix = 1;
            continue;
        }

        eq = strchr(arg, '=');
        n = eq ? (size_t) (eq - arg) : strlen(arg);

        for (k = 0; k < (int) (sizeof(names) / sizeof(names[0])); k++) {
            if (strlen(names[k].name) == n
                && strncmp(names[k].name, arg, n) == 0)
            {
                break;
            }
        }

        if (k == (int) (sizeof(names) / sizeof(names[0]))) {
            die("%s: unknown option \"%s\" (see --help)", cmd, argv[i]);
        }

        if (eq) {
            val = eq + 1;

        } else if (i + 1 < argc) {
            val = argv[++i];

        } else {
            die("%s: --%s needs a value", cmd, names[k].name);
        }

        *(const char **) ((char *) o + names[k].off) = val;
    }
}


/*
 * The key's raw bytes.  Trailing CR and LF are stripped so that a key
 * written with "echo" works; nginx strips them the same way.
 */
static size_t
read_key(const char *file, unsigned char *key)
{
    int          fd;
    ssize_t      n;
    size_t       len;
    struct stat  st;

    fd = open(file, O_RDONLY);
    if (fd == -1) {
        die("key file %s: %s", file, strerror(errno));
    }

    if (fstat(fd, &st) == -1) {
        die("key file %s: %s", file, strerror(errno));
    }

    if (st.st_mode & S_IROTH) {
        fprintf(stderr, "psd-link: warning: key file %s is readable by "
                "everyone; chmod o-r it\n", file);
    }

    len = 0;

    /* room for a CR LF after the largest key */
    for ( ;; ) {
        n = read(fd, key + len, PSD_KEY_FILE_MAX + 3 - len);

        if (n == -1) {
            if (errno == EINTR) {
                continue;
            }
            die("key file %s: %s", file, strerror(errno));
        }

        if (n == 0) {
            break;
        }

        len += n;

        if (len > PSD_KEY_FILE_MAX + 2) {
            break;
        }
    }

    close(fd);

    while (len && (key[len - 1] == '\n' || key[len - 1] == '\r')) {
        len--;
    }

    if (len > PSD_KEY_FILE_MAX) {
        die("key file %s: larger than %d bytes, not a key",
            file, PSD_KEY_FILE_MAX);
    }

    if (len < PSD_LINK_KEY_MIN) {
        die("key file %s: %zu bytes, at least %d are required",
            file, len, PSD_LINK_KEY_MIN);
    }

    return len;
}


static void
require(const char *cmd, const char *value, const char *name)
{
    if (value == NULL) {
        die("%s: --%s is required (see --help)", cmd, name);
    }
}


static int
cmd_sign(int argc, char **argv)
{
    char               id[PSD_LINK_ID_LEN + 1], query[PSD_LINK_QUERY_MAX];
    char              *url;
    long               n;
    size_t             key_len, path_len;
    long long          now, ttl;
    psd_opts_t         o;
    const char        *err;
    unsigned char      key[PSD_KEY_FILE_MAX + 3];
    psd_link_params_t  p;

    parse_opts(&o, argc, argv, "sign");

    require("sign", o.key_file, "key");
    require("sign", o.kid, "kid");
    require("sign", o.path, "path");
    require("sign", o.ttl, "ttl");

    if (o.url || o.client || o.skew || o.max_ttl) {
        die("sign: --url, --client, --skew and --max-ttl are for verify");
    }

    now = o.now ? number("--now", o.now, 0, 999999999999LL)
                : (long long) time(NULL);
    ttl = number("--ttl", o.ttl, 1, 999999999999LL);

    if (now + ttl > 999999999999LL) {
        die("sign: now + ttl is past the largest psd_exp (12 digits)");
    }

    memset(&p, 0, sizeof(psd_link_params_t));

    p.kid = o.kid;
    p.kid_len = strlen(o.kid);
    p.path = o.path;
    p.path_len = strlen(o.path);
    p.prefix = o.prefix;
    p.exp = now + ttl;

    if (o.id) {
        p.id = o.id;
        p.id_len = strlen(o.id);

    } else {
        if (psd_random_base62(id, PSD_LINK_ID_LEN) != 0) {
            die("sign: no random bytes for the link id");
        }
        id[PSD_LINK_ID_LEN] = '\0';
        p.id = id;
        p.id_len = PSD_LINK_ID_LEN;
    }

    if (o.order) {
        p.order = o.order;
        p.order_len = strlen(o.order);
        if (p.order_len == 0) {
            die("sign: --order is empty");
        }
    }

    if (o.ip) {
        p.ip = o.ip;
        p.ip_len = strlen(o.ip);
        if (p.ip_len == 0) {
            die("sign: --ip is empty");
        }
    }

    if (o.limit) {
        p.limit = (uint32_t) number("--limit", o.limit, 1,
                                    PSD_LINK_LIMIT_MAX);
    }

    /* checked after the other options, so a typo costs no key read */
    key_len = read_key(o.key_file, key);
    p.key = key;
    p.key_len = key_len;

    n = psd_link_sign(&p, query, sizeof(query), &err);

    psd_cleanse(key, sizeof(key));

    if (n < 0) {
        die("sign: %s", err);
    }

    path_len = strlen(o.path);

    url = malloc(3 * path_len + 1);
    if (url == NULL) {
        die("sign: out of memory");
    }

    if (psd_link_encode_path(url, 3 * path_len + 1, o.path, path_len) < 0) {
        die("sign: cannot encode the path");
    }

    printf("%s?%s\n", url, query);
    free(url);

    return 0;
}


static int
unhex(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }

    c |= 0x20;

    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}


/*
 * %XX-decodes the path as nginx would, but resolves nothing: %2F would be
 * a '/' that nginx treats as a separator after decoding, and %00 ends the
 * path there, so either would make us verify a path nginx never sees
 */
static size_t
decode_path(char *dst, const char *src, size_t len)
{
    int     hi, lo, c;
    size_t  i, n;

    n = 0;

    for (i = 0; i < len; i++) {
        c = (unsigned char) src[i];

        if (c == '%') {
            hi = i + 2 < len ? unhex((unsigned char) src[i + 1]) : -1;
            lo = i + 2 < len ? unhex((unsigned char) src[i + 2]) : -1;

            if (hi < 0 || lo < 0) {
                die("verify: bad percent-encoding in the path");
            }

            c = (hi << 4) | lo;
            i += 2;

            if (c == '/' || c == '\0') {
                die("verify: the path holds %%%02X; pass the path nginx "
                    "would see", c);
            }
        }

        dst[n++] = (char) c;
    }

    return n;
}


static int
cmd_verify(int argc, char **argv)
{
    char               *path, *args, *hash;
    size_t              key_len, path_len;
    psd_ip_t            client;
    psd_opts_t          o;
    psd_link_t          link;
    const char         *url, *q, *query;
    unsigned char       key[PSD_KEY_FILE_MAX + 3], addr[16];
    psd_link_key_t      k;
    psd_link_conf_t     conf;
    psd_link_status_e   rc;

    parse_opts(&o, argc, argv, "verify");

    require("verify", o.key_file, "key");
    require("verify", o.kid, "kid");
    require("verify", o.url, "url");

    if (o.path || o.ttl || o.order || o.ip || o.id || o.limit || o.prefix) {
        die("verify: --path, --ttl, --order, --ip, --id, --limit and "
            "--prefix are for sign");
    }

    if (strlen(o.kid) == 0 || strlen(o.kid) > PSD_LINK_KID_MAX) {
        die("verify: --kid must be 1 to %d characters", PSD_LINK_KID_MAX);
    }

    memset(&conf, 0, sizeof(psd_link_conf_t));

    conf.now = o.now ? number("--now", o.now, 0, 999999999999LL)
                     : (long long) time(NULL);
    conf.skew = o.skew ? number("--skew", o.skew, 0, 999999999999LL) : 0;
    conf.max_ttl = o.max_ttl ? number("--max-ttl", o.max_ttl, 0,
                                      999999999999LL)
                             : 0;

    if (o.client) {
        if (inet_pton(AF_INET, o.client, addr) == 1) {
            psd_ip_set(&client, addr, 4);

        } else if (inet_pton(AF_INET6, o.client, addr) == 1) {
            psd_ip_set(&client, addr, 16);

        } else {
            die("verify: --client: not an IPv4 or IPv6 address: \"%s\"",
                o.client);
        }
    }

    /* a whole URL is fine too: the scheme and host are not signed */
    url = o.url;

    if (strncmp(url, "http://", 7) == 0 || strncmp(url, "https://", 8) == 0)
    {
        url = strchr(url, ':') + 3;
        url += strcspn(url, "/?#");
    }

    q = strchr(url, '?');
    path_len = q ? (size_t) (q - url) : strlen(url);
    query = q ? q + 1 : "";

    path = malloc(path_len + strlen(query) + 2);
    if (path == NULL) {
        die("verify: out of memory");
    }

    path_len = decode_path(path, url, path_len);

    /* browsers keep the fragment to themselves */
    args = path + path_len + 1;
    strcpy(args, query);
    hash = strchr(args, '#');
    if (hash) {
        *hash = '\0';
    }

    key_len = read_key(o.key_file, key);

    memset(&k, 0, sizeof(psd_link_key_t));
    k.kid = o.kid;
    k.kid_len = strlen(o.kid);
    k.key = key;
    k.key_len = key_len;

    conf.keys = &k;
    conf.nkeys = 1;

    rc = psd_link_verify(&link, &conf, args, strlen(args), path, path_len,
                         o.client ? &client : NULL);

    psd_cleanse(key, sizeof(key));
    free(path);

    printf("%s\n", psd_link_status_name(rc));

    return rc == PSD_LINK_OK ? 0 : 1;
}


static redisContext *
revoke_connect(const char *redis, const char *pass, int db)
{
    int           port;
    char          host[256];
    const char   *colon;
    redisReply   *reply;
    redisContext *c;

    colon = strrchr(redis, ':');

    if (colon == NULL || colon == redis || (size_t) (colon - redis) >= 256) {
        die("revoke: --redis must be HOST:PORT");
    }

    memcpy(host, redis, colon - redis);
    host[colon - redis] = '\0';
    port = atoi(colon + 1);

    c = redisConnect(host, port);

    if (c == NULL || c->err) {
        die("revoke: cannot connect to redis at %s: %s", redis,
            c ? c->errstr : "out of memory");
    }

    if (pass) {
        reply = redisCommand(c, "AUTH %s", pass);

        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            die("revoke: redis refused the password");
        }

        freeReplyObject(reply);
    }

    if (db) {
        reply = redisCommand(c, "SELECT %d", db);
        if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
            die("revoke: SELECT %d failed", db);
        }

        freeReplyObject(reply);
    }

    return c;
}


/*
 * Writes what psd_link_revoke writes (README, "Redis key layout"): the
 * field "revoked" of psd:{link:<id>} or psd:{order:<id>}.  A link's
 * revocation lapses with --ttl (the location's psd_link_max_ttl plus a
 * day, by default 31 days); an order's does not.  A command-line tool may
 * block: hiredis' own connection is used.
 */
static int
cmd_revoke(int argc, char **argv)
{
    int           i, db, n, hops;
    char          key[128], now[32], pass[513], addr[300], *moved;
    long          ttl;
    FILE         *f;
    const char   *link, *order, *redis, *pfile;
    redisReply   *reply;
    redisContext *c;

    link = order = pfile = NULL;
    redis = "127.0.0.1:6379";
    ttl = 31 * 86400;
    db = 0;

    for (i = 0; i < argc; i++) {
        if (i + 1 >= argc) {
            die("revoke: %s needs a value", argv[i]);
        }

        if (strcmp(argv[i], "--link") == 0) {
            link = argv[++i];
        } else if (strcmp(argv[i], "--order") == 0) {
            order = argv[++i];
        } else if (strcmp(argv[i], "--redis") == 0) {
            redis = argv[++i];
        } else if (strcmp(argv[i], "--password-file") == 0) {
            pfile = argv[++i];
        } else if (strcmp(argv[i], "--db") == 0) {
            db = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--ttl") == 0) {
            ttl = atol(argv[++i]);
        } else {
            die("revoke: unknown option %s", argv[i]);
        }
    }

    if ((link == NULL) == (order == NULL)) {
        die("revoke: give exactly one of --link and --order");
    }

    n = strlen(link ? link : order);

    if (n == 0 || n > 64
        || strspn(link ? link : order, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                  "abcdefghijklmnopqrstuvwxyz0123456789_-.:")
           != (size_t) n
        || (link && strpbrk(link, ".:")))
    {
        die("revoke: invalid id");
    }

    if (pfile) {
        f = fopen(pfile, "r");
        if (f == NULL || fgets(pass, sizeof(pass), f) == NULL) {
            die("revoke: cannot read %s", pfile);
        }

        fclose(f);
        pass[strcspn(pass, "\r\n")] = '\0';
    }

    snprintf(key, sizeof(key), "psd:{%s:%s}", link ? "link" : "order",
             link ? link : order);
    snprintf(now, sizeof(now), "%ld", (long) time(NULL));
    snprintf(addr, sizeof(addr), "%s", redis);

    /* on Redis Cluster, any node may be named: MOVED says where to go */

    for (hops = 0; /* void */ ; hops++) {
        c = revoke_connect(addr, pfile ? pass : NULL, db);

        reply = redisCommand(c, "HSET %s revoked %s", key, now);

        if (reply && reply->type == REDIS_REPLY_ERROR && hops < 3
            && strncmp(reply->str, "MOVED ", 6) == 0
            && (moved = strchr(reply->str + 6, ' ')) != NULL)
        {
            snprintf(addr, sizeof(addr), "%s", moved + 1);
            freeReplyObject(reply);
            redisFree(c);
            continue;
        }

        break;
    }

    psd_cleanse(pass, sizeof(pass));

    if (reply == NULL || reply->type == REDIS_REPLY_ERROR) {
        die("revoke: redis: %s", reply ? reply->str : c->errstr);
    }

    freeReplyObject(reply);

    if (link && ttl > 0) {
        reply = redisCommand(c, "EXPIRE %s %ld", key, ttl);
        if (reply) {
            freeReplyObject(reply);
        }
    }

    redisFree(c);

    printf("revoked %s %s\n", link ? "link" : "order", link ? link : order);

    return 0;
}


int
main(int argc, char **argv)
{
    const char  *cmd;

    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }

    cmd = argv[1];

    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0
        || strcmp(cmd, "help") == 0)
    {
        fputs(usage, stdout);
        return 0;
    }

    if (strcmp(cmd, "sign") == 0) {
        return cmd_sign(argc - 2, argv + 2);
    }

    if (strcmp(cmd, "verify") == 0) {
        return cmd_verify(argc - 2, argv + 2);
    }

    if (strcmp(cmd, "revoke") == 0) {
        return cmd_revoke(argc - 2, argv + 2);
    }

    die("unknown command \"%s\" (see --help)", cmd);

    return 2;
}
