/*
 * The one-file launcher of the gateway binary: dist/edge-min-linux-<arch> is this program
 * with the Nuitka standalone build of edge_min appended as a zstd-compressed payload.
 *
 * Every start:   if ${XDG_CACHE_HOME:-$HOME/.cache}/edge-min/<tag>/.complete exists,
 *                execv() the program in that directory, with the same argv.
 * First start:   unpack the payload into <dir>.partial.<pid>, fsync it, write .complete,
 *                rename() it to <dir>, then execv() as above.
 *
 * Why not Nuitka's own --onefile launcher (measured, docs/benchmarks.md): in its "cached"
 * mode it still decompresses the whole payload and CRC32s every unpacked file on every
 * start (0.2 s of a 0.4 s start), and it stays resident as the parent of the runtime
 * (about 20 MB RSS, a second PID for systemd, signals forwarded). Here a cached start costs
 * one stat() and one execv(): the runtime *is* the process that was started.
 *
 * <tag> is the version and a digest of the build (sources, options, toolchain), so two
 * builds never share a directory and a directory is never half-written: it only appears,
 * complete, by rename(). A start killed mid-unpack leaves <dir>.partial.<pid>, which the
 * next unpack removes once that pid is gone. The zstd frame's checksum (XXH64) and the
 * recorded sizes catch a truncated or corrupted file; nothing runs from a payload that fails.
 *
 * Once a new version has unpacked, older ones of the same program are removed but the newest
 * of them, which a rollback returns to.
 *
 * EDGE_MIN_UNPACK_DIR=<dir> overrides the whole path (e.g. a read-only image that ships
 * the unpacked tree). The program finds the one file it came from in EDGE_MIN_ONEFILE.
 *
 * Secure boot: before anything is unpacked or executed, on every start, the launcher checks
 * the Ed25519 signature (ed25519_verify.c) over the whole file but the signature itself:
 * itself, the payload and the trailer. Only the key compiled in (launcher_key.h, generated
 * by build/signing.py) is accepted. A file signed by another key, changed at any byte,
 * truncated or unsigned ends with "signature check failed: ...; download it again from
 * <where>". Once verified, the program gets EDGE_MIN_BOOT_VERIFIED=<key id> and
 * EDGE_MIN_BOOT_KEY_KIND=<development|release>: the launcher's claim, which the runtime's
 * secure_boot check accepts (edge_min/security/boot.py). EDGE_MIN_VERIFY_ONLY=1 checks,
 * prints the result and exits, without unpacking or running anything.
 *
 * File format (all integers little-endian), version 2:
 *   launcher | payload | signature block | trailer
 *   trailer, the last 128 bytes of the file:
 *     "EDGEMINP" | u32 format=2 | u32 signature block size (96) | u64 payload offset |
 *     u64 payload size | char tag[40] | char entry[56]   (NUL-padded; entry: the program)
 *   signature block: the signer's public key (32) | Ed25519 signature (64) of
 *     file[0, payload offset + payload size) followed by the trailer
 *   payload: one zstd frame (with its content checksum) of records
 *     u8 kind (0 end, 1 file, 2 symlink, 3 directory) | u32 mode | u16 name length |
 *     name | u64 size | size bytes (file content, or the symlink's target)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>

#include "ed25519_verify.h"
#include "launcher_key.h" /* SIGNING_KEY, SIGNING_KEY_ID, SIGNING_KEY_KIND, DOWNLOAD_FROM */

#define TRAILER_SIZE 128
#define MAGIC "EDGEMINP"
#define FORMAT 2
#define SIGNATURE_SIZE 96 /* public key (32) | signature (64) */
#define CHUNK (256 * 1024)

static const unsigned char signing_key[32] = SIGNING_KEY;

static const char *self_path;
static char target_dir[PATH_MAX];
static char partial_dir[PATH_MAX]; /* being unpacked: removed again if the unpack fails */

static void remove_tree(const char *path);

static void die(const char *what, const char *path, int err) {
    if (partial_dir[0]) remove_tree(partial_dir);
    fprintf(stderr, "edge-min: %s %s: %s\n", what, path ? path : "", err ? strerror(err) : "");
    if (err == EACCES || err == EROFS || err == ENOSPC || err == EDQUOT || err == ENOTDIR) {
        fprintf(stderr,
                "edge-min: the program unpacks once (about 100 MB) into %s; point "
                "XDG_CACHE_HOME (or EDGE_MIN_UNPACK_DIR) at a writable directory with room\n",
                target_dir[0] ? target_dir : "the cache directory");
    }
    exit(1);
}

/* snprintf into an array, or die: a path that does not fit is an error, never cut short. */
#define FMT(buf, ...)                                                                      \
    do {                                                                                   \
        int n_ = snprintf(buf, sizeof buf, __VA_ARGS__);                                 \
        if (n_ < 0 || (size_t)n_ >= sizeof buf) die("path too long:", buf, ENAMETOOLONG);  \
    } while (0)

static uint64_t le64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static uint32_t le32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- the compressed stream ---------------------------------------------------------- */

struct stream {
    int fd;
    uint64_t offset, left; /* compressed bytes not read yet */
    ZSTD_DStream *z;
    ZSTD_inBuffer in;
    unsigned char inbuf[CHUNK];
    int ended; /* the frame is complete: its checksum was checked */
};

static void corrupt(const char *why) {
    fprintf(stderr, "edge-min: the payload of %s is corrupt (%s); download it again\n",
            self_path, why);
    if (partial_dir[0]) remove_tree(partial_dir);
    exit(1);
}

/* More compressed input, if the buffer is used up and any is left. */
static void refill(struct stream *s) {
    if (s->in.pos < s->in.size || s->left == 0) return;
    size_t want = s->left < CHUNK ? (size_t)s->left : CHUNK;
    ssize_t got = pread(s->fd, s->inbuf, want, (off_t)s->offset);
    if (got <= 0) die("cannot read the payload of", self_path, got < 0 ? errno : EIO);
    s->offset += (uint64_t)got;
    s->left -= (uint64_t)got;
    s->in.src = s->inbuf;
    s->in.size = (size_t)got;
    s->in.pos = 0;
}

/* Exactly n bytes of the uncompressed payload into buf; a short stream is corruption. */
static void zread(struct stream *s, void *buf, size_t n) {
    ZSTD_outBuffer out = {buf, n, 0};
    while (out.pos < out.size) {
        if (s->ended) corrupt("it ends early");
        refill(s);
        size_t before_in = s->in.pos, before_out = out.pos;
        size_t rc = ZSTD_decompressStream(s->z, &out, &s->in);
        if (ZSTD_isError(rc)) corrupt(ZSTD_getErrorName(rc));
        if (rc == 0) s->ended = 1;
        if (!s->ended && s->in.pos == before_in && out.pos == before_out && s->left == 0 &&
            s->in.pos == s->in.size)
            corrupt("it is truncated");
    }
}

/* After the end record: the frame must end there (which checks its checksum), exactly. */
static void zfinish(struct stream *s) {
    unsigned char extra;
    while (!s->ended) {
        refill(s);
        ZSTD_outBuffer out = {&extra, 1, 0};
        size_t before_in = s->in.pos;
        size_t rc = ZSTD_decompressStream(s->z, &out, &s->in);
        if (ZSTD_isError(rc)) corrupt(ZSTD_getErrorName(rc));
        if (out.pos != 0) corrupt("data after the end record");
        if (rc == 0) s->ended = 1;
        else if (s->in.pos == before_in && s->left == 0) corrupt("it is truncated");
    }
    if (s->in.pos != s->in.size || s->left != 0) corrupt("data after the frame");
}

static uint8_t zu8(struct stream *s) { unsigned char b; zread(s, &b, 1); return b; }
static uint16_t zu16(struct stream *s) { unsigned char b[2]; zread(s, b, 2); return (uint16_t)(b[0] | b[1] << 8); }
static uint32_t zu32(struct stream *s) { unsigned char b[4]; zread(s, b, 4); return le32(b); }
static uint64_t zu64(struct stream *s) { unsigned char b[8]; zread(s, b, 8); return le64(b); }

/* ---- files --------------------------------------------------------------------------- */

static void mkdirs(const char *path, mode_t mode) {
    char buf[PATH_MAX];
    size_t len = strlen(path);
    if (len >= sizeof buf) die("path too long:", path, ENAMETOOLONG);
    memcpy(buf, path, len + 1);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, mode) != 0 && errno != EEXIST) die("cannot create", buf, errno);
        *p = '/';
    }
    if (mkdir(buf, mode) != 0 && errno != EEXIST) die("cannot create", buf, errno);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    remove(path);
    return 0;
}

static void remove_tree(const char *path) { nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

static void fsync_path(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) { fsync(fd); close(fd); }
}

/* A name from the payload must stay inside the directory it unpacks into. */
static void check_name(const char *name) {
    if (name[0] == '/' || strstr(name, "..") != NULL || name[0] == 0) {
        fprintf(stderr, "edge-min: the payload of %s names an unsafe path '%s'\n", self_path, name);
        if (partial_dir[0]) remove_tree(partial_dir);
        exit(1);
    }
}

/* The folder that holds `path`, written into `parent`; returns the last component of `path`,
 * or NULL if it has no folder part ("name" or "/name"). */
static const char *split_parent(const char *path, char *parent, size_t size) {
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return NULL;
    int n = snprintf(parent, size, "%.*s", (int)(slash - path), path);
    if (n < 0 || (size_t)n >= size) die("path too long:", path, ENAMETOOLONG);
    return slash + 1;
}

/* Remove <dir>.partial.<pid> left by starts that were killed while unpacking. */
static void remove_stale_partials(const char *dir) {
    char parent[PATH_MAX], prefix[PATH_MAX];
    const char *name = split_parent(dir, parent, sizeof parent);
    if (!name) return;
    FMT(prefix, "%s.partial.", name);
    DIR *d = opendir(parent);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0) continue;
        long pid = strtol(e->d_name + strlen(prefix), NULL, 10);
        if (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno != ESRCH)) continue; /* still going */
        char path[PATH_MAX];
        FMT(path, "%s/%s", parent, e->d_name);
        remove_tree(path);
    }
    closedir(d);
}

/* After an update: keep this program's newest other unpacked version (for a rollback) and
 * remove older ones of the same program (a sibling holding a file named `entry`), so years
 * of updates do not fill the device. Other programs' directories are left alone. */
static void remove_old_versions(const char *dir, const char *entry) {
    char parent[PATH_MAX], path[PATH_MAX], keep[PATH_MAX] = "";
    const char *name = split_parent(dir, parent, sizeof parent);
    if (!name) return;
    time_t newest = 0;
    for (int pass = 0; pass < 2; pass++) {
        DIR *d = opendir(parent);
        if (!d) return;
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.' || strcmp(e->d_name, name) == 0) continue;
            if (strstr(e->d_name, ".partial.") != NULL) continue;
            struct stat st;
            FMT(path, "%s/%s/%s", parent, e->d_name, entry);
            if (lstat(path, &st) != 0) continue; /* another program's, or not ours */
            FMT(path, "%s/%s/.complete", parent, e->d_name);
            if (stat(path, &st) != 0) continue;
            if (pass == 0 && st.st_mtime >= newest) {
                newest = st.st_mtime;
                FMT(keep, "%s", e->d_name);
            } else if (pass == 1 && strcmp(e->d_name, keep) != 0) {
                FMT(path, "%s/%s", parent, e->d_name);
                remove_tree(path);
            }
        }
        closedir(d);
    }
}

static void unpack(int fd, uint64_t offset, uint64_t size, const char *dir, const char *entry) {
    char path[PATH_MAX];
    char *partial = partial_dir;
    FMT(partial_dir, "%s.partial.%ld", dir, (long)getpid());
    remove_stale_partials(dir);
    remove_tree(partial);
    mkdirs(partial, 0700);

    static struct stream s;
    memset(&s, 0, sizeof s);
    s.fd = fd;
    s.offset = offset;
    s.left = size;
    s.z = ZSTD_createDStream();
    if (s.z == NULL) die("cannot unpack (out of memory):", self_path, ENOMEM);
    /* At most an 8 MB window (what build/onefile.py writes): a small gateway's RAM. */
    ZSTD_DCtx_setParameter(s.z, ZSTD_d_windowLogMax, 23);
    static unsigned char buf[CHUNK];
    for (;;) {
        uint8_t kind = zu8(&s);
        if (kind == 0) break;
        uint32_t mode = zu32(&s) & 07777;
        uint16_t name_len = zu16(&s);
        char name[PATH_MAX];
        if (name_len == 0 || name_len >= sizeof name) die("bad entry name length in", self_path, 0);
        zread(&s, name, name_len);
        name[name_len] = 0;
        check_name(name);
        uint64_t len = zu64(&s);
        FMT(path, "%s/%s", partial, name);
        if (kind == 3) {
            mkdirs(path, mode ? mode : 0700);
        } else if (kind == 2) {
            if (len >= PATH_MAX) die("bad symlink in", self_path, 0);
            char target[PATH_MAX];
            zread(&s, target, (size_t)len);
            target[len] = 0;
            if (symlink(target, path) != 0) die("cannot create", path, errno);
        } else if (kind == 1) {
            int out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode ? mode : 0600);
            if (out < 0) die("cannot create", path, errno);
            while (len > 0) {
                size_t n = len < CHUNK ? (size_t)len : CHUNK;
                zread(&s, buf, n);
                for (size_t done = 0; done < n;) {
                    ssize_t w = write(out, buf + done, n - done);
                    if (w < 0) die("cannot write", path, errno);
                    done += (size_t)w;
                }
                len -= n;
            }
            if (fsync(out) != 0) die("cannot write", path, errno);
            close(out);
        } else {
            die("unknown entry kind in", self_path, 0);
        }
    }
    zfinish(&s);
    ZSTD_freeDStream(s.z);

    FMT(path, "%s/.complete", partial);
    int marker = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (marker < 0 || write(marker, "1\n", 2) != 2 || fsync(marker) != 0)
        die("cannot write", path, errno);
    close(marker);
    fsync_path(partial);

    if (rename(partial, dir) != 0) {
        int err = errno;
        FMT(path, "%s/.complete", dir);
        if ((err == EEXIST || err == ENOTEMPTY) && access(path, F_OK) == 0) {
            remove_tree(partial); /* another start won the race: use its directory */
        } else if (err == EEXIST || err == ENOTEMPTY) {
            char stale[PATH_MAX]; /* an incomplete directory from elsewhere: replace it */
            FMT(stale, "%s.partial.stale%ld", dir, (long)getpid());
            if (rename(dir, stale) != 0 || rename(partial, dir) != 0) die("cannot replace", dir, errno);
            remove_tree(stale);
        } else {
            die("cannot rename into", dir, err);
        }
    }
    partial_dir[0] = 0;
    remove_old_versions(dir, entry);
    char parent[PATH_MAX];
    if (split_parent(dir, parent, sizeof parent)) fsync_path(parent);
}

/* ---- the signature ---------------------------------------------------------------- */

static void refuse(const char *why) {
    fprintf(stderr, "edge-min: signature check failed: %s %s; download it again from %s\n",
            self_path, why, DOWNLOAD_FROM);
    exit(1);
}

/* The key id of a raw public key, as build/signing.py computes it: ed25519:<16 hex digits
 * of SHA-512(key)>. */
static void key_id(const unsigned char key[32], char out[25]) {
    struct sha512 s;
    unsigned char digest[64];
    sha512_init(&s);
    sha512_update(&s, key, 32);
    sha512_final(&s, digest);
    memcpy(out, "ed25519:", 8);
    for (int i = 0; i < 8; i++) snprintf(out + 8 + 2 * i, 3, "%02x", digest[i]);
}

/* Check the signature over file[0, signed_end) and the trailer t, or refuse to go on. The
 * whole region is hashed (the file mapped once, read sequentially): Ed25519 hashes the
 * message once, after R and the key, so it streams. */
static void verify(int fd, uint64_t signed_end, uint32_t block_size, const unsigned char *t) {
    char why[160];
    if (block_size == 0) refuse("is not signed (an unsigned build)");
    if (block_size != SIGNATURE_SIZE) {
        snprintf(why, sizeof why, "has a signature of %u bytes, not %d (truncated or damaged)",
                 (unsigned)block_size, SIGNATURE_SIZE);
        refuse(why);
    }
    unsigned char block[SIGNATURE_SIZE];
    if (pread(fd, block, SIGNATURE_SIZE, (off_t)signed_end) != SIGNATURE_SIZE)
        refuse("has its signature cut off");
    if (memcmp(block, signing_key, 32) != 0) {
        char theirs[25];
        key_id(block, theirs);
        snprintf(why, sizeof why, "is signed by another key (%s, this launcher accepts %s)",
                 theirs, SIGNING_KEY_ID);
        refuse(why);
    }
    struct ed25519_verify v;
    ed25519_verify_start(&v, block + 32, signing_key);
    if (signed_end > 0) {
        void *map = mmap(NULL, (size_t)signed_end, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) die("cannot read", self_path, errno);
        madvise(map, (size_t)signed_end, MADV_SEQUENTIAL);
        ed25519_verify_update(&v, map, (size_t)signed_end);
        munmap(map, (size_t)signed_end);
    }
    ed25519_verify_update(&v, t, TRAILER_SIZE);
    if (ed25519_verify_finish(&v) != 0)
        refuse("does not match its signature (changed or damaged)");
}

int main(int argc, char **argv) {
    (void)argc;
    static char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) die("cannot find itself through", "/proc/self/exe", errno);
    self[n] = 0;
    self_path = self;

    int fd = open(self, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die("cannot open", self, errno);
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < TRAILER_SIZE) die("cannot read", self, errno);
    unsigned char t[TRAILER_SIZE];
    if (pread(fd, t, TRAILER_SIZE, st.st_size - TRAILER_SIZE) != TRAILER_SIZE)
        die("cannot read", self, errno);
    if (memcmp(t, MAGIC, 8) != 0) {
        fprintf(stderr, "edge-min: %s has no payload (format %d) at its end; download it again "
                "from %s\n", self, FORMAT, DOWNLOAD_FROM);
        return 1;
    }
    if (le32(t + 8) != FORMAT) refuse("is not signed (payload format 1, an older build)");
    uint32_t block_size = le32(t + 12);
    uint64_t offset = le64(t + 16), size = le64(t + 24);
    char tag[41], entry[57];
    memcpy(tag, t + 32, 40); tag[40] = 0;
    memcpy(entry, t + 72, 56); entry[56] = 0;
    /* Each sum is checked on its own: sizes from the file must not wrap around. */
    uint64_t file_size = (uint64_t)st.st_size;
    if (offset > file_size || size > file_size - offset ||
        (uint64_t)block_size > file_size - offset - size ||
        offset + size + block_size + TRAILER_SIZE != file_size)
        refuse("is truncated or damaged (its sizes do not add up)");
    verify(fd, offset + size, block_size, t);
    if (getenv("EDGE_MIN_VERIFY_ONLY")) {
        printf("%s: signature good, signed by %s (%s key)\n", self, SIGNING_KEY_ID,
               SIGNING_KEY_KIND);
        return 0;
    }
    if (!tag[0] || !entry[0]) corrupt("no tag or program name in its trailer");
    check_name(tag);
    check_name(entry);

    const char *over = getenv("EDGE_MIN_UNPACK_DIR");
    const char *xdg = getenv("XDG_CACHE_HOME");
    const char *home = getenv("HOME");
    if (over && over[0]) {
        FMT(target_dir, "%s", over);
    } else if (xdg && xdg[0] == '/') {
        FMT(target_dir, "%s/edge-min/%s", xdg, tag);
    } else if (home && home[0] == '/') {
        FMT(target_dir, "%s/.cache/edge-min/%s", home, tag);
    } else {
        FMT(target_dir, "/tmp/edge-min-%ld/%s", (long)getuid(), tag);
    }
    size_t len = strlen(target_dir);
    while (len > 1 && target_dir[len - 1] == '/') target_dir[--len] = 0;

    char marker[PATH_MAX], program[PATH_MAX];
    FMT(marker, "%s/.complete", target_dir);
    FMT(program, "%s/%s", target_dir, entry);
    if (access(marker, F_OK) != 0) {
        if (over && over[0]) die("no unpacked program in EDGE_MIN_UNPACK_DIR", target_dir, ENOENT);
        char parent[PATH_MAX];
        if (split_parent(target_dir, parent, sizeof parent)) mkdirs(parent, 0700);
        unpack(fd, offset, size, target_dir, entry);
    }
    close(fd);
    setenv("EDGE_MIN_ONEFILE", self, 1);
    /* What the runtime's secure_boot check reads: this launcher verified the payload. */
    setenv("EDGE_MIN_BOOT_VERIFIED", SIGNING_KEY_ID, 1);
    setenv("EDGE_MIN_BOOT_KEY_KIND", SIGNING_KEY_KIND, 1);
    execv(program, argv);
    die("cannot start", program, errno);
    return 1;
}
