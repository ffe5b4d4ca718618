/*
 * test_stream.c - the framed peer stream (stream.c) over socketpairs: a
 * frame is a 4-byte big-endian length and the payload; frames of every size
 * arrive intact and in order however the bytes are cut; an oversized frame
 * or EOF closes the stream once, with a reason; the bytes read past the
 * HTTP upgrade are the first frames; callbacks may free their stream.
 */
#include "dtx/buf.h"
#include "dtx/err.h"
#include "dtx/stream.h"
#include "unit.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* What one end received. */
struct rx {
    struct stream *s;
    int frames;
    struct buf text; /* small frames as text, each followed by '|' */
    size_t len[64];  /* lengths of the first 64 frames */
    bool intact;     /* every patterned frame matched its pattern */
    bool patterned;  /* frames carry pattern() rather than text */
    int closes;
    int close_err;
    char why[128];
    int free_at_frame; /* stream_free() inside on_frame number n (1-based); 0: never */
    bool free_on_close;
};

static unsigned char pattern(int frame, size_t i)
{
    return (unsigned char)(frame * 131 + (int)(i * 7) + (int)(i >> 9));
}

static void fill_pattern(char *p, int frame, size_t len)
{
    for (size_t i = 0; i < len; i++)
        p[i] = (char)pattern(frame, i);
}

static void on_frame(void *arg, const char *data, size_t len)
{
    struct rx *rx = arg;
    int n = rx->frames++;

    if (n < 64)
        rx->len[n] = len;
    if (rx->patterned) {
        for (size_t i = 0; i < len && rx->intact; i++)
            rx->intact = (unsigned char)data[i] == pattern(n, i);
    } else {
        buf_append(&rx->text, data, len);
        buf_putc(&rx->text, '|');
    }
    if (rx->free_at_frame == n + 1) {
        stream_free(rx->s);
        rx->s = NULL;
    }
}

static void on_close(void *arg, int err, const char *why)
{
    struct rx *rx = arg;

    rx->closes++;
    rx->close_err = err;
    snprintf(rx->why, sizeof(rx->why), "%s", why);
    if (rx->free_on_close) {
        stream_free(rx->s);
        rx->s = NULL;
    }
}

static void rx_init(struct rx *rx)
{
    memset(rx, 0, sizeof(*rx));
    buf_init(&rx->text);
    buf_puts(&rx->text, "");
    rx->intact = true;
}

static void rx_release(struct rx *rx)
{
    stream_free(rx->s);
    rx->s = NULL;
    buf_release(&rx->text);
}

/* A stream on fd delivering into rx, with pre already read from fd. */
static void rx_open(struct rx *rx, struct ev_loop *loop, int fd, const char *pre, size_t prelen)
{
    struct stream_cbs cbs = {.on_frame = on_frame, .on_close = on_close, .arg = rx};

    rx->s = stream_new(loop, fd, pre, prelen, &cbs);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rx->s);
}

/* Runs iterations until *count reaches want or two seconds pass. */
static bool run_until(struct ev_loop *loop, const int *count, int want)
{
    uint64_t until = ev_clock_us() + 2000000u;

    while (*count < want && ev_clock_us() < until)
        CU_ASSERT_EQUAL(ev_loop_once(loop, 10), 0);
    return *count >= want;
}

static void run_iterations(struct ev_loop *loop, int n)
{
    for (int i = 0; i < n; i++)
        CU_ASSERT_EQUAL(ev_loop_once(loop, 5), 0);
}

/* Appends the wire form of one frame to b. */
static void frame(struct buf *b, const char *payload, size_t len)
{
    buf_put_be32(b, (uint32_t)len);
    buf_append(b, payload, len);
}

static void pair(int type, int sv[2])
{
    CU_ASSERT_FATAL(socketpair(AF_UNIX, type | SOCK_CLOEXEC, 0, sv) == 0);
}

static void a_frame_on_the_wire_is_a_big_endian_length_then_the_payload(void)
{
    static const char want[] = "\0\0\0\5hello\0\0\0\0\0\0\1\4x";
    char got[64];
    struct ev_loop loop;
    struct rx rx;
    char big[260];
    int sv[2];

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    pair(SOCK_STREAM, sv);
    rx_init(&rx);
    rx_open(&rx, &loop, sv[0], NULL, 0);
    memset(big, 'x', sizeof(big));
    stream_send(rx.s, "hello", 5);
    stream_send(rx.s, "", 0);
    stream_send(rx.s, big, sizeof(big));
    CU_ASSERT_EQUAL(stream_pending(rx.s), 9 + 4 + 264);
    CU_ASSERT_EQUAL(recv(sv[1], got, sizeof(got), MSG_DONTWAIT), -1); /* nothing before the loop */
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 0), 0);
    CU_ASSERT_EQUAL(stream_pending(rx.s), 0);
    CU_ASSERT_EQUAL(recv(sv[1], got, 18, MSG_WAITALL), 18);
    CU_ASSERT_EQUAL(memcmp(got, want, 18), 0);
    rx_release(&rx);
    close(sv[1]);
    ev_loop_release(&loop);
}

static void frames_queued_in_one_iteration_leave_in_one_write(void)
{
    char got[256];
    struct ev_loop loop;
    struct rx rx;
    int sv[2];

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    pair(SOCK_SEQPACKET, sv); /* one recv() per send() */
    rx_init(&rx);
    rx_open(&rx, &loop, sv[0], NULL, 0);
    stream_send(rx.s, "one", 3);
    stream_send2(rx.s, "two", 3, "2", 1);
    stream_send(rx.s, "three", 5);
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 0), 0);
    CU_ASSERT_EQUAL(recv(sv[1], got, sizeof(got), MSG_DONTWAIT), 3 * 4 + 3 + 4 + 5);
    CU_ASSERT_EQUAL(recv(sv[1], got, sizeof(got), MSG_DONTWAIT), -1);
    rx_release(&rx);
    close(sv[1]);
    ev_loop_release(&loop);
}

static void frames_of_many_sizes_arrive_intact_and_in_order(void)
{
    static const size_t sizes[] = {
        0,    1,    2,     3,     4,     5,      127, 128, 255,   256,    1000,     4095,
        4096, 4097, 65535, 65536, 65537, 131071, 0,   7,   65539, 200000, 1u << 20, (3u << 20) + 7,
        1,    0,
    };
    enum { N = sizeof(sizes) / sizeof(sizes[0]) };
    struct rx tx, rx;
    struct ev_loop loop;
    char *p = malloc((3u << 20) + 7);
    int sv[2];

    CU_ASSERT_FATAL(p != NULL);
    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    pair(SOCK_STREAM, sv);
    rx_init(&tx);
    rx_init(&rx);
    rx.patterned = true;
    rx_open(&tx, &loop, sv[0], NULL, 0);
    rx_open(&rx, &loop, sv[1], NULL, 0);
    for (int i = 0; i < N; i++) {
        fill_pattern(p, i, sizes[i]);
        stream_send(tx.s, p, sizes[i]);
        if (i % 5 == 4) /* some leave alone, some together */
            CU_ASSERT_EQUAL(ev_loop_once(&loop, 0), 0);
    }
    CU_ASSERT_TRUE(run_until(&loop, &rx.frames, N));
    CU_ASSERT_EQUAL(rx.frames, N);
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL(rx.len[i], sizes[i]);
    CU_ASSERT_TRUE(rx.intact);
    CU_ASSERT_EQUAL(stream_pending(tx.s), 0);
    CU_ASSERT_EQUAL(rx.closes + tx.closes, 0);
    rx_release(&tx);
    rx_release(&rx);
    ev_loop_release(&loop);
    free(p);
}

static void stream_send2_arrives_as_one_frame(void)
{
    static const char json[] = "{\"type\":\"prepare\",\"gtid\":\"c1-1-7\"}";
    struct rx tx, rx;
    struct ev_loop loop;
    int sv[2];

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    pair(SOCK_STREAM, sv);
    rx_init(&tx);
    rx_init(&rx);
    rx_open(&tx, &loop, sv[0], NULL, 0);
    rx_open(&rx, &loop, sv[1], NULL, 0);
    stream_send2(tx.s, json, strlen(json), "\nTRAILER", 8);
    stream_send2(tx.s, json, strlen(json), NULL, 0);
    stream_send2(tx.s, "", 0, "tail only", 9);
    CU_ASSERT_TRUE(run_until(&loop, &rx.frames, 3));
    CU_ASSERT_EQUAL(rx.frames, 3);
    CU_ASSERT_EQUAL(rx.len[0], strlen(json) + 8);
    CU_ASSERT_STRING_EQUAL(rx.text.data, "{\"type\":\"prepare\",\"gtid\":\"c1-1-7\"}\nTRAILER|"
                                         "{\"type\":\"prepare\",\"gtid\":\"c1-1-7\"}|"
                                         "tail only|");
    rx_release(&tx);
    rx_release(&rx);
    ev_loop_release(&loop);
}

static void a_frame_written_in_small_pieces_is_reassembled(void)
{
    struct buf wire;
    struct ev_loop loop;
    struct rx rx;
    char payload[300];
    size_t piece[] = {1, 3, 7}, total;
    int sv[2];

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    pair(SOCK_STREAM, sv);
    rx_init(&rx);
    rx.patterned = true;
    rx_open(&rx, &loop, sv[0], NULL, 0);
    buf_init(&wire);
    for (int i = 0; i < 3; i++) {
        fill_pattern(payload, i, sizeof(payload));
        frame(&wire, payload, sizeof(payload));
    }
    total = buf_avail(&wire);
    for (size_t off = 0, k = 0; off < total; k++) { /* 1, 3, 7 bytes at a time, across frames */
        size_t n = piece[k % 3] < total - off ? piece[k % 3] : total - off;

        CU_ASSERT_EQUAL_FATAL(write(sv[1], wire.data + off, n), (ssize_t)n);
        off += n;
        CU_ASSERT_EQUAL(ev_loop_once(&loop, 1000), 0);
        CU_ASSERT_EQUAL(rx.frames, (int)(off / (4 + sizeof(payload)))); /* only whole frames */
    }
    CU_ASSERT_EQUAL(rx.frames, 3);
    CU_ASSERT_TRUE(rx.intact);
    CU_ASSERT_EQUAL(rx.closes, 0);
    buf_release(&wire);
    rx_release(&rx);
    close(sv[1]);
    ev_loop_release(&loop);
}

/* Writes a frame header claiming len bytes, after one good frame "ok", and some payload. */
static void send_header_claiming(int fd, uint32_t len)
{
    struct buf wire;

    buf_init(&wire);
    frame(&wire, "ok", 2);
    buf_put_be32(&wire, len);
    buf_puts(&wire, "the start of a payload");
    CU_ASSERT_EQUAL(write(fd, wire.data, wire.len), (ssize_t)wire.len);
    buf_release(&wire);
}

static void a_frame_over_the_size_limit_closes_the_stream_with_a_reason(void)
{
    struct ev_loop loop;
    struct rx rx;
    int sv[2];

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    pair(SOCK_STREAM, sv);
    rx_init(&rx);
    rx.free_on_close = true;
    rx_open(&rx, &loop, sv[0], NULL, 0);
    send_header_claiming(sv[1], STREAM_MAX_FRAME + 1);
    CU_ASSERT_TRUE(run_until(&loop, &rx.closes, 1));
    CU_ASSERT_EQUAL(rx.closes, 1);
    CU_ASSERT_EQUAL(rx.close_err, DTX_EPROTO);
    CU_ASSERT_STRING_EQUAL(rx.why, "peer sent an oversized frame");
    CU_ASSERT_STRING_EQUAL(rx.text.data, "ok|");            /* the frame before it was delivered */
    CU_ASSERT_PTR_NULL(rx.s);                               /* freed inside on_close */
    CU_ASSERT_EQUAL(send(sv[1], "x", 1, MSG_NOSIGNAL), -1); /* the socket was closed */
    rx_release(&rx);
    close(sv[1]);
    ev_loop_release(&loop);
}

static void a_frame_of_exactly_the_size_limit_is_accepted(void)
{
    struct ev_loop loop;
    struct rx rx;
    int sv[2];

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    pair(SOCK_STREAM, sv);
    rx_init(&rx);
    rx_open(&rx, &loop, sv[0], NULL, 0);
    send_header_claiming(sv[1], STREAM_MAX_FRAME);
    CU_ASSERT_TRUE(run_until(&loop, &rx.frames, 1));
    run_iterations(&loop, 5);
    CU_ASSERT_EQUAL(rx.closes, 0); /* waiting for the rest of it */
    CU_ASSERT_STRING_EQUAL(rx.text.data, "ok|");
    close(sv[1]);
    CU_ASSERT_TRUE(run_until(&loop, &rx.closes, 1));
    CU_ASSERT_STRING_EQUAL(rx.why, "peer closed the stream"); /* not "oversized" */
    CU_ASSERT_EQUAL(rx.frames, 1);
    rx_release(&rx);
    ev_loop_release(&loop);
}

static void eof_calls_on_close_once_after_the_whole_frames(void)
{
    struct buf wire;
    struct ev_loop loop;
    struct rx rx;
    int sv[2];

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    pair(SOCK_STREAM, sv);
    rx_init(&rx);
    rx_open(&rx, &loop, sv[0], NULL, 0);
    buf_init(&wire);
    frame(&wire, "a", 1);
    frame(&wire, "bb", 2);
    buf_put_be32(&wire, 10);
    buf_puts(&wire, "cut"); /* 3 of 10 bytes */
    CU_ASSERT_EQUAL(write(sv[1], wire.data, wire.len), (ssize_t)wire.len);
    close(sv[1]);
    CU_ASSERT_TRUE(run_until(&loop, &rx.closes, 1));
    run_iterations(&loop, 3);
    CU_ASSERT_EQUAL(rx.closes, 1);
    CU_ASSERT_EQUAL(rx.close_err, DTX_EIO);
    CU_ASSERT_STRING_EQUAL(rx.why, "peer closed the stream");
    CU_ASSERT_STRING_EQUAL(rx.text.data, "a|bb|");
    buf_release(&wire);
    rx_release(&rx);
    ev_loop_release(&loop);
}

static void a_failed_write_is_reported_by_on_close_never_inside_stream_send(void)
{
    struct ev_loop loop;
    struct rx rx;
    size_t pending;
    int sv[2];

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    pair(SOCK_STREAM, sv);
    rx_init(&rx);
    rx_open(&rx, &loop, sv[0], NULL, 0);
    CU_ASSERT_FATAL(shutdown(sv[1], SHUT_RD) == 0); /* writes fail; no EOF to read */
    stream_send(rx.s, "lost", 4);
    CU_ASSERT_EQUAL(rx.closes, 0);
    CU_ASSERT_TRUE(run_until(&loop, &rx.closes, 1));
    CU_ASSERT_EQUAL(rx.close_err, DTX_EIO);
    CU_ASSERT_STRING_EQUAL(rx.why, "Broken pipe");
    pending = stream_pending(rx.s);
    stream_send(rx.s, "ignored", 7); /* a broken stream takes nothing more */
    CU_ASSERT_EQUAL(stream_pending(rx.s), pending);
    close(sv[1]); /* nor reports EOF on top */
    run_iterations(&loop, 3);
    CU_ASSERT_EQUAL(rx.closes, 1);
    rx_release(&rx);
    ev_loop_release(&loop);
}

static void bytes_read_past_the_upgrade_are_the_first_frames(void)
{
    struct buf wire;
    struct ev_loop loop;
    struct rx rx;
    size_t cut;
    int sv[2];

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    pair(SOCK_STREAM, sv);
    buf_init(&wire);
    frame(&wire, "one", 3);
    frame(&wire, "two", 3);
    cut = wire.len + 2; /* the upgrade read ended inside the third frame's header */
    frame(&wire, "three", 5);
    frame(&wire, "four", 4);
    CU_ASSERT_EQUAL(write(sv[1], wire.data + cut, wire.len - cut), (ssize_t)(wire.len - cut));
    rx_init(&rx);
    rx_open(&rx, &loop, sv[0], wire.data, cut);
    CU_ASSERT_TRUE(run_until(&loop, &rx.frames, 4));
    CU_ASSERT_STRING_EQUAL(rx.text.data, "one|two|three|four|");
    rx_release(&rx);
    close(sv[1]);
    buf_release(&wire);
    ev_loop_release(&loop);
}

static void frames_read_past_the_upgrade_arrive_with_a_silent_socket(void)
{
    struct buf wire;
    struct ev_loop loop;
    struct rx rx;
    int sv[2];

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    pair(SOCK_STREAM, sv);
    buf_init(&wire);
    frame(&wire, "early", 5);
    frame(&wire, "bird", 4);
    rx_init(&rx);
    rx_open(&rx, &loop, sv[0], wire.data, wire.len);
    CU_ASSERT_EQUAL(rx.frames, 0); /* never from inside stream_new */
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 1000), 0);
    CU_ASSERT_STRING_EQUAL(rx.text.data, "early|bird|");
    rx_release(&rx);
    close(sv[1]);
    buf_release(&wire);
    ev_loop_release(&loop);
}

static void record_closefd(void *ctx, int fd)
{
    int *closed = ctx;

    *closed = fd;
    close(fd);
}

static void a_stream_freed_inside_on_frame_delivers_nothing_more(void)
{
    struct buf wire;
    struct ev_loop loop;
    struct rx rx;
    struct stream_cbs cbs = {.on_frame = on_frame, .on_close = on_close, .arg = &rx};
    int sv[2], closed = -1;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    pair(SOCK_STREAM, sv);
    rx_init(&rx);
    rx.free_at_frame = 2;
    cbs.closefd = record_closefd;
    cbs.closefd_ctx = &closed;
    rx.s = stream_new(&loop, sv[0], NULL, 0, &cbs);
    CU_ASSERT_PTR_NOT_NULL_FATAL(rx.s);
    buf_init(&wire);
    frame(&wire, "1", 1);
    frame(&wire, "2", 1);
    frame(&wire, "3", 1);
    CU_ASSERT_EQUAL(write(sv[1], wire.data, wire.len), (ssize_t)wire.len);
    CU_ASSERT_TRUE(run_until(&loop, &rx.frames, 2));
    run_iterations(&loop, 3);
    CU_ASSERT_STRING_EQUAL(rx.text.data, "1|2|");
    CU_ASSERT_EQUAL(rx.closes, 0);  /* the owner freed it: no on_close */
    CU_ASSERT_EQUAL(closed, sv[0]); /* through closefd, once the callback returned */
    CU_ASSERT_PTR_NULL(rx.s);
    stream_free(NULL); /* a no-op */
    rx_release(&rx);
    close(sv[1]);
    buf_release(&wire);
    ev_loop_release(&loop);
}

static void a_stream_on_an_fd_the_loop_cannot_watch_is_refused_and_the_fd_closed(void)
{
    struct stream_cbs cbs = {.on_frame = on_frame, .on_close = on_close};
    char path[] = "/tmp/dtx-unit-stream-XXXXXX";
    struct ev_loop loop;
    int fd, closed = -1;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    fd = mkstemp(path); /* epoll refuses regular files */
    CU_ASSERT_FATAL(fd >= 0);
    unlink(path);
    cbs.closefd = record_closefd;
    cbs.closefd_ctx = &closed;
    CU_ASSERT_PTR_NULL(stream_new(&loop, fd, NULL, 0, &cbs));
    CU_ASSERT_EQUAL(closed, fd);
    ev_loop_release(&loop);
}

static void stream_flush_sync_writes_without_the_loop(void)
{
    char got[16];
    struct ev_loop loop;
    struct rx rx;
    int sv[2];

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    pair(SOCK_STREAM, sv);
    rx_init(&rx);
    rx_open(&rx, &loop, sv[0], NULL, 0);
    stream_send(rx.s, "crash", 5);
    stream_flush_sync(rx.s, 1000);
    CU_ASSERT_EQUAL(stream_pending(rx.s), 0);
    CU_ASSERT_EQUAL(recv(sv[1], got, sizeof(got), MSG_DONTWAIT), 9);
    CU_ASSERT_EQUAL(memcmp(got, "\0\0\0\5crash", 9), 0);
    rx_release(&rx);
    close(sv[1]);
    ev_loop_release(&loop);
}

static void stream_flush_sync_gives_up_after_its_timeout_and_the_loop_finishes(void)
{
    struct rx tx, rx;
    struct ev_loop loop;
    size_t len = 4u << 20; /* far more than a socket buffer */
    char *p = malloc(len);
    uint64_t start, took;
    int sv[2];

    CU_ASSERT_FATAL(p != NULL);
    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    pair(SOCK_STREAM, sv);
    rx_init(&tx);
    rx_init(&rx);
    rx.patterned = true;
    rx_open(&tx, &loop, sv[0], NULL, 0);
    fill_pattern(p, 0, len);
    stream_send(tx.s, p, len);
    free(p);
    start = ev_clock_us();
    stream_flush_sync(tx.s, 50); /* nobody reads the other end yet */
    took = ev_clock_us() - start;
    CU_ASSERT(took >= 50000u);
    CU_ASSERT(took < 1000000u);
    CU_ASSERT(stream_pending(tx.s) > 0);
    CU_ASSERT(stream_pending(tx.s) < len + 4);
    rx_open(&rx, &loop, sv[1], NULL, 0);
    CU_ASSERT_TRUE(run_until(&loop, &rx.frames, 1));
    CU_ASSERT_EQUAL(rx.len[0], len);
    CU_ASSERT_TRUE(rx.intact);
    CU_ASSERT_EQUAL(stream_pending(tx.s), 0);
    rx_release(&tx);
    rx_release(&rx);
    ev_loop_release(&loop);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(a_frame_on_the_wire_is_a_big_endian_length_then_the_payload),
        UNIT_TEST(frames_queued_in_one_iteration_leave_in_one_write),
        UNIT_TEST(frames_of_many_sizes_arrive_intact_and_in_order),
        UNIT_TEST(stream_send2_arrives_as_one_frame),
        UNIT_TEST(a_frame_written_in_small_pieces_is_reassembled),
        UNIT_TEST(a_frame_over_the_size_limit_closes_the_stream_with_a_reason),
        UNIT_TEST(a_frame_of_exactly_the_size_limit_is_accepted),
        UNIT_TEST(eof_calls_on_close_once_after_the_whole_frames),
        UNIT_TEST(a_failed_write_is_reported_by_on_close_never_inside_stream_send),
        UNIT_TEST(bytes_read_past_the_upgrade_are_the_first_frames),
        UNIT_TEST(frames_read_past_the_upgrade_arrive_with_a_silent_socket),
        UNIT_TEST(a_stream_freed_inside_on_frame_delivers_nothing_more),
        UNIT_TEST(a_stream_on_an_fd_the_loop_cannot_watch_is_refused_and_the_fd_closed),
        UNIT_TEST(stream_flush_sync_writes_without_the_loop),
        UNIT_TEST(stream_flush_sync_gives_up_after_its_timeout_and_the_loop_finishes),
    };

    return unit_run("stream", tests, sizeof(tests) / sizeof(tests[0]));
}
