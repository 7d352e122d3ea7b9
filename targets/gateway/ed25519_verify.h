/*
 * Ed25519 signature verification (RFC 8032, "pure" Ed25519) and the SHA-512 it needs,
 * self-contained: the launcher checks its payload with it before unpacking or executing
 * anything (launcher.c). Verify only: nothing here holds or makes a secret key.
 *
 * The message is hashed once (SHA-512 of R || A || M), so a large message is streamed:
 *
 *     struct ed25519_verify v;
 *     ed25519_verify_start(&v, signature, public_key);   // hashes R and A
 *     ed25519_verify_update(&v, chunk, n);                // as many times as needed
 *     ok = ed25519_verify_finish(&v) == 0;
 */
#ifndef EDGE_MIN_ED25519_VERIFY_H
#define EDGE_MIN_ED25519_VERIFY_H

#include <stddef.h>
#include <stdint.h>

struct sha512 {
    uint64_t h[8];
    uint64_t bytes; /* hashed so far (a message of 2^64 bytes is far beyond a payload) */
    unsigned char block[128];
    size_t fill;
};

void sha512_init(struct sha512 *s);
void sha512_update(struct sha512 *s, const void *data, size_t n);
void sha512_final(struct sha512 *s, unsigned char out[64]);

struct ed25519_verify {
    struct sha512 hash;
    unsigned char signature[64];
    unsigned char public_key[32];
};

void ed25519_verify_start(struct ed25519_verify *v, const unsigned char signature[64],
                          const unsigned char public_key[32]);
void ed25519_verify_update(struct ed25519_verify *v, const void *data, size_t n);
/* 0 if the signature is valid for the key and everything passed to update; -1 if not
 * (a bad signature, a non-canonical S, a public key that is not a curve point). */
int ed25519_verify_finish(struct ed25519_verify *v);

#endif
