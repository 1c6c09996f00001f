/*
 * Copyright (C) ngx_psd_module authors
 *
 * base64url (RFC 4648 section 5) without padding, strict: a decoder that
 * accepts exactly one spelling of every byte string, so a signature or a
 * token has a single valid form.  nginx-free.
 */

#ifndef PSD_B64_H
#define PSD_B64_H

#include <stddef.h>

#define psd_b64url_encoded_len(n)  (((n) * 4 + 2) / 3)
#define psd_b64url_decoded_max(n)  (((n) * 3) / 4)

/* returns the number of characters written to dst (no NUL is written) */
size_t psd_b64url_encode(char *dst, const unsigned char *src, size_t len);

/*
 * returns the number of bytes written to dst, or -1 on any character
 * outside the alphabet, padding, an impossible length (len % 4 == 1), or
 * non-zero unused bits in the last character
 */
long psd_b64url_decode(unsigned char *dst, const char *src, size_t len);

/* standard base64 with padding (RFC 4648 section 4), strict likewise */
size_t psd_b64_encode(char *dst, const unsigned char *src, size_t len);
long psd_b64_decode(unsigned char *dst, const char *src, size_t len);

#endif
