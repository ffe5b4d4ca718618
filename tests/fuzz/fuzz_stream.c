/*
 * fuzz_stream.c - the peer stream's framing (stream.c) on any bytes: the
 * input is what a peer sent after the HTTP upgrade, handed to stream_new as
 * the bytes already read, on a socket whose other end is closed. Each frame
 * the stream cuts from it (4-byte big-endian length, payload) goes through
 * msg_parse as in msgcheck.h; then the stream must have closed exactly
 * once (EOF, or an oversized frame) and delivered exactly the complete
 * frames that precede the end or the first oversized one.
 */
#include "dtx/ev.h"
#include "dtx/stream.h"

#include "msgcheck.h"

#include <sys/socket.h>

static struct ev_loop loop;

struct rx {
    struct stream *s;
    size_t frames;
    size_t bytes; /* delivered, with each frame's 4-byte length */
    int closes;
};

static void on_frame(void *arg, const char *data, size_t len)
{
    struct rx *rx = arg;

    rx->frames++;
    rx->bytes += 4 + len;
    msgcheck_frame(data, len);
}

static void on_close(void *arg, int err, const char *why)
{
    struct rx *rx = arg;

    FUZZ_CHECK(err < 0 && why && *why);
    rx->closes++;
}

/* The complete frames at the start of data (up to an oversized one); *bytes is their extent. */
static size_t expected_frames(const unsigned char *data, size_t size, size_t *bytes)
{
    size_t off = 0, n = 0;

    while (size - off >= 4) {
        uint32_t len = (uint32_t)data[off] << 24 | (uint32_t)data[off + 1] << 16 |
                       (uint32_t)data[off + 2] << 8 | data[off + 3];

        if (len > STREAM_MAX_FRAME || size - off - 4 < len)
            break;
        off += 4 + (size_t)len;
        n++;
    }
    *bytes = off;
    return n;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet("fuzz_stream");
    FUZZ_CHECK(ev_loop_init(&loop) == 0);
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    struct stream_cbs cbs = {.on_frame = on_frame, .on_close = on_close};
    struct rx rx = {0};
    size_t want_bytes, want_frames = expected_frames(data, size, &want_bytes);
    int sv[2];

    FUZZ_CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    close(sv[1]); /* the peer sent all it will: the stream reads EOF after the input */
    cbs.arg = &rx;
    rx.s = stream_new(&loop, sv[0], (const char *)data, size, &cbs);
    FUZZ_CHECK(rx.s != NULL);
    for (int i = 0; i < 100 && rx.closes == 0; i++)
        ev_loop_once(&loop, 1000);
    FUZZ_CHECK(rx.closes == 1);
    FUZZ_CHECK(rx.frames == want_frames && rx.bytes == want_bytes);
    stream_free(rx.s);
    return 0;
}
