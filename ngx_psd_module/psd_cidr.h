/*
 * Copyright (C) ngx_psd_module authors
 *
 * IPv4 and IPv6 addresses and CIDR blocks in a strict canonical text form,
 * so that a signed "psd_ip" value has exactly one spelling.  nginx-free.
 *
 * Canonical text:
 *   IPv4  dotted decimal, four octets, no leading zeros ("192.0.2.1")
 *   IPv6  RFC 5952: lowercase hex, no leading zeros in a group, the longest
 *         run (first on a tie) of two or more zero groups written "::",
 *         no dotted-quad tail ("2001:db8::1")
 *   CIDR  address "/" prefix, decimal without leading zeros, host bits zero;
 *         a full-length block is written as the bare address (no "/32",
 *         no "/128")
 * IPv4-mapped IPv6 addresses (::ffff:0:0/96) are refused as text: write the
 * IPv4 form.  A mapped client address is matched as the IPv4 it carries.
 */

#ifndef PSD_CIDR_H
#define PSD_CIDR_H

#include <stddef.h>

#define PSD_IP_V4  4
#define PSD_IP_V6  6

/* "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/127" is the longest: 43 */
#define PSD_CIDR_TEXT_MAX  43
#define PSD_IP_TEXT_MAX    39


typedef struct {
    unsigned char  family;       /* PSD_IP_V4 or PSD_IP_V6 */
    unsigned char  addr[16];     /* network order; IPv4 uses addr[0..3] */
} psd_ip_t;


typedef struct {
    psd_ip_t       net;
    unsigned char  prefix;       /* 0..32 or 0..128 */
} psd_cidr_t;


/* canonical text only; returns 0, or -1 for anything else */
int psd_ip_parse(psd_ip_t *ip, const char *text, size_t len);
int psd_cidr_parse(psd_cidr_t *cidr, const char *text, size_t len);

/*
 * from a binary address as sockets hold it: len 4 (struct in_addr) or 16
 * (struct in6_addr); an IPv4-mapped IPv6 address becomes IPv4.
 * returns 0, or -1 for another length
 */
int psd_ip_set(psd_ip_t *ip, const unsigned char *addr, size_t len);

/* 1 if ip is inside cidr, 0 if not (a different family never matches) */
int psd_cidr_match(const psd_cidr_t *cidr, const psd_ip_t *ip);

/*
 * canonical text, no NUL written; buf holds at least PSD_IP_TEXT_MAX or
 * PSD_CIDR_TEXT_MAX bytes; returns the length
 */
size_t psd_ip_format(char *buf, const psd_ip_t *ip);
size_t psd_cidr_format(char *buf, const psd_cidr_t *cidr);

#endif
