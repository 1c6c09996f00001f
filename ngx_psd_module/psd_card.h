/*
 * Copyright (C) ngx_psd_module authors
 *
 * Card number (PAN) checks, tokens, fingerprints, the safety-net scanner,
 * CVV and expiry checks.  nginx-free.
 *
 * Nothing here prints or logs; callers must never log a psd_card_t's
 * digits, first6 or the input they parsed it from.  Wipe a psd_card_t with
 * psd_card_wipe() when done.
 */

#ifndef PSD_CARD_H
#define PSD_CARD_H

#include <stddef.h>
#include <time.h>

#include "psd_crypto.h"

#define PSD_PAN_MIN            12
#define PSD_PAN_MAX            19

/* "tok_" + 24 base62 characters */
#define PSD_TOKEN_PREFIX       "tok_"
#define PSD_TOKEN_PREFIX_LEN   4
#define PSD_TOKEN_RANDOM_CHARS 24
#define PSD_TOKEN_LEN          (PSD_TOKEN_PREFIX_LEN + PSD_TOKEN_RANDOM_CHARS)

/* "fp_" + base64url of an HMAC-SHA256 (43 characters) */
#define PSD_FP_PREFIX          "fp_"
#define PSD_FP_LEN             (3 + 43)
#define PSD_FP_KEY_MIN         16

/* the scanner looks for 13 to 19 digits, as card numbers in the wild have */
#define PSD_SCAN_MIN           13
#define PSD_SCAN_MAX           19

/* psd_card_scan() flags: also '+' and "%20" separate digit groups */
#define PSD_SCAN_FORM          0x01


typedef enum {
    PSD_BRAND_UNKNOWN = 0,
    PSD_BRAND_VISA,
    PSD_BRAND_MASTERCARD,
    PSD_BRAND_AMEX,
    PSD_BRAND_DISCOVER,
    PSD_BRAND_JCB,
    PSD_BRAND_UNIONPAY,
    PSD_BRAND_DINERS
} psd_card_brand_t;


/* stable names: see psd_card_status_name() */
typedef enum {
    PSD_CARD_OK = 0,
    PSD_CARD_NOT_DIGITS,        /* "not_digits" */
    PSD_CARD_BAD_LENGTH,        /* "bad_length" */
    PSD_CARD_LUHN_FAILED,       /* "luhn_failed" */
    PSD_CARD_BAD_FORMAT,        /* "bad_format": expiry */
    PSD_CARD_BAD_MONTH,         /* "bad_month" */
    PSD_CARD_BAD_YEAR,          /* "bad_year" */
    PSD_CARD_EXPIRED            /* "expired" */
} psd_card_status_t;


typedef enum {
    PSD_TOKEN_NONE = 0,
    PSD_TOKEN_RANDOM,           /* tok_XXXXXXXXXXXXXXXXXXXXXXXX */
    PSD_TOKEN_FORMAT            /* digits that keep first6/last4, fail Luhn */
} psd_token_kind_t;


typedef struct {
    char               digits[PSD_PAN_MAX + 1];    /* NUL-terminated */
    size_t             len;
    psd_card_brand_t   brand;
    psd_card_status_t  status;
    char               first6[7];
    char               last4[5];
} psd_card_t;


typedef struct {
    size_t             offset;     /* of the first digit */
    size_t             len;        /* bytes, first to last digit inclusive */
    size_t             ndigits;
} psd_card_scan_t;


/*
 * Normalizes and checks a PAN: spaces and dashes are removed, anything
 * else but digits is "not_digits"; 12 to 19 digits and the brand's own
 * lengths, else "bad_length"; then Luhn.  On failure the digits, first6
 * and last4 are wiped; len and brand stay for the error message.
 */
psd_card_status_t psd_card_parse(const char *in, size_t len, psd_card_t *card);

void psd_card_wipe(psd_card_t *card);

/* 1 if the digits pass Luhn (digits only, len >= 1) */
int psd_luhn_valid(const char *digits, size_t len);

/* brand from the IIN only; needs at least 6 digits */
psd_card_brand_t psd_card_brand(const char *digits, size_t len);

/* 1 if len is a valid PAN length for the brand */
int psd_card_brand_len_ok(psd_card_brand_t brand, size_t len);

const char *psd_card_brand_name(psd_card_brand_t brand);
const char *psd_card_status_name(psd_card_status_t status);

/* writes PSD_TOKEN_LEN characters (no NUL); 0 on success */
int psd_token_random(char *out);

/*
 * writes card->len digits (no NUL): first six and last four of the card,
 * random digits between, one of them adjusted so that the whole fails Luhn;
 * card must have status PSD_CARD_OK.  0 on success.
 */
int psd_token_format(const psd_card_t *card, char *out);

/*
 * The shape only: a mistyped card number (Luhn fails) also looks like a
 * format-preserving token; only a vault lookup tells a real token.
 */
psd_token_kind_t psd_token_kind(const char *s, size_t len);

/*
 * writes PSD_FP_LEN characters (no NUL): "fp_" + base64url(HMAC-SHA256(key,
 * digits)); key_len >= PSD_FP_KEY_MIN.  0 on success.
 */
int psd_card_fingerprint(const unsigned char *key, size_t key_len,
    const psd_card_t *card, char *out);

/* the same with a key prepared once (psd_hmac_key_new()) */
int psd_card_fingerprint_k(psd_hmac_key_t *key, const psd_card_t *card,
    char *out);

/*
 * Finds the first Luhn-valid card number in buf (see the rules in
 * docs/tokenization-internals.md): 1 and *m on a find, 0 otherwise.
 * Linear in len.  To go on, scan again from m->offset + m->len.
 */
int psd_card_scan(const unsigned char *buf, size_t len, unsigned flags,
    psd_card_scan_t *m);

/*
 * 3 digits, or 4 for amex; either when brand is PSD_BRAND_UNKNOWN.
 * PSD_CARD_NOT_DIGITS or PSD_CARD_BAD_LENGTH otherwise.
 */
psd_card_status_t psd_cvv_check(const char *s, size_t len,
    psd_card_brand_t brand);

/* "MM/YY", "MM/YYYY" (2000..2099) or "MMYY"; *year gets four digits */
psd_card_status_t psd_expiry_parse(const char *s, size_t len, int *month,
    int *year);

/*
 * month 1..12, year 2000..2099 (or 0..99 for 20YY); a card is good through
 * the last day of its month, in UTC, relative to now
 */
psd_card_status_t psd_expiry_check(int month, int year, time_t now);

#endif
