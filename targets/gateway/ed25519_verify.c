/*
 * Ed25519 verification and SHA-512 (see ed25519_verify.h). The field and group arithmetic
 * follow TweetNaCl (Bernstein, van Gastel, Janssen, Lange, Schwabe, Smetsers; public
 * domain): GF(2^255-19) as 16 signed 16-bit limbs, extended twisted Edwards coordinates.
 * Verification handles only public data, so nothing here needs to be constant time; the
 * constant-time select is kept because it is what the formulas were checked with.
 * Additions to TweetNaCl: streaming SHA-512, and S >= L is refused (RFC 8032 5.1.7), so a
 * signature has one encoding. Tested against RFC 8032's vectors and signatures made by
 * Python's cryptography: tests/targets/test_ed25519_verify.py.
 */
#include "ed25519_verify.h"

#include <string.h>

/* ---- SHA-512 (FIPS 180-4) ------------------------------------------------------------ */

static const uint64_t K[80] = {
    0x428a2f98d728ae22ULL, 0x7137449123ef65cdULL, 0xb5c0fbcfec4d3b2fULL, 0xe9b5dba58189dbbcULL,
    0x3956c25bf348b538ULL, 0x59f111f1b605d019ULL, 0x923f82a4af194f9bULL, 0xab1c5ed5da6d8118ULL,
    0xd807aa98a3030242ULL, 0x12835b0145706fbeULL, 0x243185be4ee4b28cULL, 0x550c7dc3d5ffb4e2ULL,
    0x72be5d74f27b896fULL, 0x80deb1fe3b1696b1ULL, 0x9bdc06a725c71235ULL, 0xc19bf174cf692694ULL,
    0xe49b69c19ef14ad2ULL, 0xefbe4786384f25e3ULL, 0x0fc19dc68b8cd5b5ULL, 0x240ca1cc77ac9c65ULL,
    0x2de92c6f592b0275ULL, 0x4a7484aa6ea6e483ULL, 0x5cb0a9dcbd41fbd4ULL, 0x76f988da831153b5ULL,
    0x983e5152ee66dfabULL, 0xa831c66d2db43210ULL, 0xb00327c898fb213fULL, 0xbf597fc7beef0ee4ULL,
    0xc6e00bf33da88fc2ULL, 0xd5a79147930aa725ULL, 0x06ca6351e003826fULL, 0x142929670a0e6e70ULL,
    0x27b70a8546d22ffcULL, 0x2e1b21385c26c926ULL, 0x4d2c6dfc5ac42aedULL, 0x53380d139d95b3dfULL,
    0x650a73548baf63deULL, 0x766a0abb3c77b2a8ULL, 0x81c2c92e47edaee6ULL, 0x92722c851482353bULL,
    0xa2bfe8a14cf10364ULL, 0xa81a664bbc423001ULL, 0xc24b8b70d0f89791ULL, 0xc76c51a30654be30ULL,
    0xd192e819d6ef5218ULL, 0xd69906245565a910ULL, 0xf40e35855771202aULL, 0x106aa07032bbd1b8ULL,
    0x19a4c116b8d2d0c8ULL, 0x1e376c085141ab53ULL, 0x2748774cdf8eeb99ULL, 0x34b0bcb5e19b48a8ULL,
    0x391c0cb3c5c95a63ULL, 0x4ed8aa4ae3418acbULL, 0x5b9cca4f7763e373ULL, 0x682e6ff3d6b2b8a3ULL,
    0x748f82ee5defb2fcULL, 0x78a5636f43172f60ULL, 0x84c87814a1f0ab72ULL, 0x8cc702081a6439ecULL,
    0x90befffa23631e28ULL, 0xa4506cebde82bde9ULL, 0xbef9a3f7b2c67915ULL, 0xc67178f2e372532bULL,
    0xca273eceea26619cULL, 0xd186b8c721c0c207ULL, 0xeada7dd6cde0eb1eULL, 0xf57d4f7fee6ed178ULL,
    0x06f067aa72176fbaULL, 0x0a637dc5a2c898a6ULL, 0x113f9804bef90daeULL, 0x1b710b35131c471bULL,
    0x28db77f523047d84ULL, 0x32caab7b40c72493ULL, 0x3c9ebe0a15c9bebcULL, 0x431d67c49c100d4cULL,
    0x4cc5d4becb3e42b6ULL, 0x597f299cfc657e2aULL, 0x5fcb6fab3ad6faecULL, 0x6c44198c4a475817ULL
};

static uint64_t ror(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

static uint64_t be64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

/* One 128-byte block. The rounds are unrolled eight at a time over a 16-word ring of the
 * message schedule: about 1.5 times the speed of the plain loop with gcc -O2, and every
 * start hashes the whole payload (tens of MB), so this is the launcher's start-up cost. */
#define CH(x, y, z) (((x) & (y)) ^ (~(x) & (z)))
#define MAJ(x, y, z) (((x) & (y)) ^ ((x) & (z)) ^ ((y) & (z)))
#define SIG0(x) (ror(x, 28) ^ ror(x, 34) ^ ror(x, 39))
#define SIG1(x) (ror(x, 14) ^ ror(x, 18) ^ ror(x, 41))
#define sig0(x) (ror(x, 1) ^ ror(x, 8) ^ ((x) >> 7))
#define sig1(x) (ror(x, 19) ^ ror(x, 61) ^ ((x) >> 6))
#define W(i) w[(i) & 15]
#define EXPAND(i) (W(i) += sig1(W((i) - 2)) + W((i) - 7) + sig0(W((i) - 15)))
#define ROUND(a, b, c, d, e, f, g, h, i, wi)                      \
    do {                                                          \
        uint64_t t1_ = h + SIG1(e) + CH(e, f, g) + K[i] + (wi);   \
        d += t1_;                                                 \
        h = t1_ + SIG0(a) + MAJ(a, b, c);                         \
    } while (0)

static void compress(uint64_t h[8], const unsigned char *block) {
    uint64_t w[16];
    for (int i = 0; i < 16; i++) w[i] = be64(block + 8 * i);
    uint64_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
    for (int i = 0; i < 16; i += 8) {
        ROUND(a, b, c, d, e, f, g, k, i + 0, W(i + 0));
        ROUND(k, a, b, c, d, e, f, g, i + 1, W(i + 1));
        ROUND(g, k, a, b, c, d, e, f, i + 2, W(i + 2));
        ROUND(f, g, k, a, b, c, d, e, i + 3, W(i + 3));
        ROUND(e, f, g, k, a, b, c, d, i + 4, W(i + 4));
        ROUND(d, e, f, g, k, a, b, c, i + 5, W(i + 5));
        ROUND(c, d, e, f, g, k, a, b, i + 6, W(i + 6));
        ROUND(b, c, d, e, f, g, k, a, i + 7, W(i + 7));
    }
    for (int i = 16; i < 80; i += 8) {
        ROUND(a, b, c, d, e, f, g, k, i + 0, EXPAND(i + 0));
        ROUND(k, a, b, c, d, e, f, g, i + 1, EXPAND(i + 1));
        ROUND(g, k, a, b, c, d, e, f, i + 2, EXPAND(i + 2));
        ROUND(f, g, k, a, b, c, d, e, i + 3, EXPAND(i + 3));
        ROUND(e, f, g, k, a, b, c, d, i + 4, EXPAND(i + 4));
        ROUND(d, e, f, g, k, a, b, c, i + 5, EXPAND(i + 5));
        ROUND(c, d, e, f, g, k, a, b, i + 6, EXPAND(i + 6));
        ROUND(b, c, d, e, f, g, k, a, i + 7, EXPAND(i + 7));
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d;
    h[4] += e; h[5] += f; h[6] += g; h[7] += k;
}

void sha512_init(struct sha512 *s) {
    static const uint64_t iv[8] = {0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL, 0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};
    memcpy(s->h, iv, sizeof iv);
    s->bytes = 0;
    s->fill = 0;
}

void sha512_update(struct sha512 *s, const void *data, size_t n) {
    const unsigned char *p = data;
    s->bytes += n;
    if (s->fill) {
        size_t take = 128 - s->fill < n ? 128 - s->fill : n;
        memcpy(s->block + s->fill, p, take);
        s->fill += take; p += take; n -= take;
        if (s->fill < 128) return;
        compress(s->h, s->block);
        s->fill = 0;
    }
    for (; n >= 128; p += 128, n -= 128) compress(s->h, p);
    memcpy(s->block, p, n);
    s->fill = n;
}

void sha512_final(struct sha512 *s, unsigned char out[64]) {
    uint64_t bits = s->bytes * 8;
    s->block[s->fill++] = 0x80;
    if (s->fill > 112) {
        memset(s->block + s->fill, 0, 128 - s->fill);
        compress(s->h, s->block);
        s->fill = 0;
    }
    memset(s->block + s->fill, 0, 128 - s->fill);
    /* The length is a 128-bit big-endian number of bits; its high half is (bytes >> 61). */
    uint64_t high = s->bytes >> 61;
    for (int i = 0; i < 8; i++) {
        s->block[112 + i] = (unsigned char)(high >> (56 - 8 * i));
        s->block[120 + i] = (unsigned char)(bits >> (56 - 8 * i));
    }
    compress(s->h, s->block);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 8; j++) out[8 * i + j] = (unsigned char)(s->h[i] >> (56 - 8 * j));
}

/* ---- GF(2^255 - 19) ----------------------------------------------------------------- */

typedef int64_t gf[16];

static const gf gf0 = {0}, gf1 = {1};
static const gf D = {0x78a3, 0x1359, 0x4dca, 0x75eb, 0xd8ab, 0x4141, 0x0a4d, 0x0070,
                     0xe898, 0x7779, 0x4079, 0x8cc7, 0xfe73, 0x2b6f, 0x6cee, 0x5203};
static const gf D2 = {0xf159, 0x26b2, 0x9b94, 0xebd6, 0xb156, 0x8283, 0x149a, 0x00e0,
                      0xd130, 0xeef3, 0x80f2, 0x198e, 0xfce7, 0x56df, 0xd9dc, 0x2406};
static const gf X = {0xd51a, 0x8f25, 0x2d60, 0xc956, 0xa7b2, 0x9525, 0xc760, 0x692c,
                     0xdc5c, 0xfdd6, 0xe231, 0xc0a4, 0x53fe, 0xcd6e, 0x36d3, 0x2169};
static const gf Y = {0x6658, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666,
                     0x6666, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666, 0x6666};
static const gf I = {0xa0b0, 0x4a0e, 0x1b27, 0xc4ee, 0xe478, 0xad2f, 0x1806, 0x2f43,
                     0xd7a7, 0x3dfb, 0x0099, 0x2b4d, 0xdf0b, 0x4fc1, 0x2480, 0x2b83};

static void set25519(gf r, const gf a) { for (int i = 0; i < 16; i++) r[i] = a[i]; }

/* Carry each limb into the next; 2^256 = 38 (mod p) folds the top one back. Multiplying
 * instead of shifting: a left shift of a negative number is undefined in C. */
static void car25519(gf o) {
    for (int i = 0; i < 16; i++) {
        o[i] += (int64_t)1 << 16;
        int64_t c = o[i] >> 16;
        if (i < 15) o[i + 1] += c - 1;
        else o[0] += 38 * (c - 1);
        o[i] -= c * 65536;
    }
}

static void sel25519(gf p, gf q, int b) {
    int64_t c = ~(int64_t)(b - 1);
    for (int i = 0; i < 16; i++) {
        int64_t t = c & (p[i] ^ q[i]);
        p[i] ^= t;
        q[i] ^= t;
    }
}

static void pack25519(unsigned char *o, const gf n) {
    gf m, t;
    set25519(t, n);
    car25519(t);
    car25519(t);
    car25519(t);
    for (int j = 0; j < 2; j++) {
        m[0] = t[0] - 0xffed;
        for (int i = 1; i < 15; i++) {
            m[i] = t[i] - 0xffff - ((m[i - 1] >> 16) & 1);
            m[i - 1] &= 0xffff;
        }
        m[15] = t[15] - 0x7fff - ((m[14] >> 16) & 1);
        int b = (int)((m[15] >> 16) & 1);
        m[14] &= 0xffff;
        sel25519(t, m, 1 - b);
    }
    for (int i = 0; i < 16; i++) {
        o[2 * i] = (unsigned char)(t[i] & 0xff);
        o[2 * i + 1] = (unsigned char)(t[i] >> 8);
    }
}

static int neq25519(const gf a, const gf b) {
    unsigned char c[32], d[32];
    pack25519(c, a);
    pack25519(d, b);
    return memcmp(c, d, 32) != 0;
}

static int par25519(const gf a) {
    unsigned char d[32];
    pack25519(d, a);
    return d[0] & 1;
}

static void unpack25519(gf o, const unsigned char *n) {
    for (int i = 0; i < 16; i++) o[i] = n[2 * i] + ((int64_t)n[2 * i + 1] << 8);
    o[15] &= 0x7fff;
}

static void A(gf o, const gf a, const gf b) { for (int i = 0; i < 16; i++) o[i] = a[i] + b[i]; }
static void Z(gf o, const gf a, const gf b) { for (int i = 0; i < 16; i++) o[i] = a[i] - b[i]; }

static void M(gf o, const gf a, const gf b) {
    int64_t t[31] = {0};
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) t[i + j] += a[i] * b[j];
    for (int i = 0; i < 15; i++) t[i] += 38 * t[i + 16];
    for (int i = 0; i < 16; i++) o[i] = t[i];
    car25519(o);
    car25519(o);
}

static void S(gf o, const gf a) { M(o, a, a); }

static void inv25519(gf o, const gf i) {
    gf c;
    set25519(c, i);
    for (int a = 253; a >= 0; a--) {
        S(c, c);
        if (a != 2 && a != 4) M(c, c, i);
    }
    set25519(o, c);
}

static void pow2523(gf o, const gf i) {
    gf c;
    set25519(c, i);
    for (int a = 250; a >= 0; a--) {
        S(c, c);
        if (a != 1) M(c, c, i);
    }
    set25519(o, c);
}

/* ---- the group: points as (X, Y, Z, T) ----------------------------------------------- */

static void add(gf p[4], gf q[4]) {
    gf a, b, c, d, t, e, f, g, h;
    Z(a, p[1], p[0]);
    Z(t, q[1], q[0]);
    M(a, a, t);
    A(b, p[0], p[1]);
    A(t, q[0], q[1]);
    M(b, b, t);
    M(c, p[3], q[3]);
    M(c, c, D2);
    M(d, p[2], q[2]);
    A(d, d, d);
    Z(e, b, a);
    Z(f, d, c);
    A(g, d, c);
    A(h, b, a);
    M(p[0], e, f);
    M(p[1], h, g);
    M(p[2], g, f);
    M(p[3], e, h);
}

static void cswap(gf p[4], gf q[4], int b) {
    for (int i = 0; i < 4; i++) sel25519(p[i], q[i], b);
}

static void pack(unsigned char *r, gf p[4]) {
    gf tx, ty, zi;
    inv25519(zi, p[2]);
    M(tx, p[0], zi);
    M(ty, p[1], zi);
    pack25519(r, ty);
    r[31] ^= (unsigned char)(par25519(tx) << 7);
}

/* p = s * q (s: 32 bytes, little-endian); q is clobbered. */
static void scalarmult(gf p[4], gf q[4], const unsigned char *s) {
    set25519(p[0], gf0);
    set25519(p[1], gf1);
    set25519(p[2], gf1);
    set25519(p[3], gf0);
    for (int i = 255; i >= 0; --i) {
        int b = (s[i / 8] >> (i & 7)) & 1;
        cswap(p, q, b);
        add(q, p);
        add(p, p);
        cswap(p, q, b);
    }
}

static void scalarbase(gf p[4], const unsigned char *s) {
    gf q[4];
    set25519(q[0], X);
    set25519(q[1], Y);
    set25519(q[2], gf1);
    M(q[3], X, Y);
    scalarmult(p, q, s);
}

/* The negation of the point encoded in p, or -1 if p encodes no point. */
static int unpackneg(gf r[4], const unsigned char p[32]) {
    gf t, chk, num, den, den2, den4, den6;
    set25519(r[2], gf1);
    unpack25519(r[1], p);
    S(num, r[1]);
    M(den, num, D);
    Z(num, num, r[2]);
    A(den, r[2], den);
    S(den2, den);
    S(den4, den2);
    M(den6, den4, den2);
    M(t, den6, num);
    M(t, t, den);
    pow2523(t, t);
    M(t, t, num);
    M(t, t, den);
    M(t, t, den);
    M(r[0], t, den);
    S(chk, r[0]);
    M(chk, chk, den);
    if (neq25519(chk, num)) M(r[0], r[0], I);
    S(chk, r[0]);
    M(chk, chk, den);
    if (neq25519(chk, num)) return -1;
    if (par25519(r[0]) == (p[31] >> 7)) Z(r[0], gf0, r[0]);
    M(r[3], r[0], r[1]);
    return 0;
}

/* ---- scalars mod L = 2^252 + 27742317777372353535851937790883648493 ----------------- */

static const int64_t L[32] = {0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58,
                              0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
                              0,    0,    0,    0,    0,    0,    0,    0,
                              0,    0,    0,    0,    0,    0,    0,    0x10};

static void modL(unsigned char *r, int64_t x[64]) {
    int64_t carry;
    int i, j;
    for (i = 63; i >= 32; --i) {
        carry = 0;
        for (j = i - 32; j < i - 12; ++j) {
            x[j] += carry - 16 * x[i] * L[j - (i - 32)];
            carry = (x[j] + 128) >> 8;
            x[j] -= carry * 256;
        }
        x[j] += carry;
        x[i] = 0;
    }
    carry = 0;
    for (j = 0; j < 32; j++) {
        x[j] += carry - (x[31] >> 4) * L[j];
        carry = x[j] >> 8;
        x[j] &= 255;
    }
    for (j = 0; j < 32; j++) x[j] -= carry * L[j];
    for (i = 0; i < 32; i++) {
        x[i + 1] += x[i] >> 8;
        r[i] = (unsigned char)(x[i] & 255);
    }
}

static void reduce(unsigned char *r) {
    int64_t x[64];
    for (int i = 0; i < 64; i++) x[i] = r[i];
    memset(r, 0, 64);
    modL(r, x);
}

/* Whether the 32-byte little-endian s is below L (a canonical S). */
static int below_L(const unsigned char *s) {
    for (int i = 31; i >= 0; i--) {
        if (s[i] < L[i]) return 1;
        if (s[i] > L[i]) return 0;
    }
    return 0; /* equal */
}

/* ---- verification -------------------------------------------------------------------- */

void ed25519_verify_start(struct ed25519_verify *v, const unsigned char signature[64],
                          const unsigned char public_key[32]) {
    memcpy(v->signature, signature, 64);
    memcpy(v->public_key, public_key, 32);
    sha512_init(&v->hash);
    sha512_update(&v->hash, signature, 32); /* R */
    sha512_update(&v->hash, public_key, 32); /* A */
}

void ed25519_verify_update(struct ed25519_verify *v, const void *data, size_t n) {
    sha512_update(&v->hash, data, n);
}

int ed25519_verify_finish(struct ed25519_verify *v) {
    unsigned char h[64], check[32];
    gf p[4], q[4];
    sha512_final(&v->hash, h);
    if (!below_L(v->signature + 32)) return -1;
    if (unpackneg(q, v->public_key)) return -1;
    reduce(h);
    scalarmult(p, q, h);           /* p = -h*A */
    scalarbase(q, v->signature + 32); /* q = S*B */
    add(p, q);                     /* S*B - h*A, which must be R */
    pack(check, p);
    return memcmp(check, v->signature, 32) == 0 ? 0 : -1;
}
