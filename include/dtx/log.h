/*
 * log.h - the daemons' diagnostic log (stderr, one line per event).
 *
 * Not to be confused with the decision log (dlog.h). In the default text
 * format lines look like
 *   2026-11-24T13:06:01.123Z coordinator[812] INFO  decision log open: 3 records
 * and, with "log_format": "logfmt" or "json" in a daemon's config,
 *   ts=2026-11-24T13:06:01.123Z level=info prog=dtx-coordinator pid=812 gtid=c1-3-17 msg="..."
 *   {"ts":"2026-11-24T13:06:01.123Z","level":"info","prog":"dtx-coordinator","pid":812,...}
 * with the transaction (gtid) and the client's request (request_id,
 * traceparent) a line is about, when the thread has set them (log_ctx_*).
 * The level, format and program name are process-wide settings, set once
 * in main().
 */
#ifndef DTX_LOG_H
#define DTX_LOG_H

#include <stdbool.h>
#include <stdint.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };
enum log_format { LOG_TEXT = 0, LOG_LOGFMT = 1, LOG_JSON = 2 };

/* Sets the program name shown on every line and the lowest level printed. */
void log_init(const char *prog, enum log_level level);
/* Sets the line format (LOG_TEXT until called). */
void log_set_format(enum log_format format);

/* Parses "debug", "info", "warn" or "error"; returns -1 for anything else. */
int log_level_parse(const char *name);
/* Parses "text", "logfmt" or "json"; returns -1 for anything else. */
int log_format_parse(const char *name);

/*
 * What this thread's next lines are about, added to them as fields in the
 * logfmt and json formats: the transaction (gtid), and the client request
 * that caused it (its X-Request-Id and W3C traceparent). NULL clears one.
 * The strings must stay valid until replaced; each call returns what it
 * replaced, so that a caller restores it when done.
 */
struct log_ctx {
    const char *gtid;
    const char *request_id;
    const char *traceparent;
};
struct log_ctx log_ctx_set(struct log_ctx ctx);
/* Like log_ctx_set, changing the gtid only. */
struct log_ctx log_ctx_gtid(const char *gtid);
/* What this thread's lines are about now. */
struct log_ctx log_ctx_get(void);

/* True when messages at this level are printed; lets callers skip building them. */
bool log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/*
 * A kind of line that something outside may cause at any rate (a refused
 * request, a closed connection): at most one line a second is written, and
 * the next one says how many were left out. Zero-initialised; owned and
 * used by one thread.
 */
struct log_rate {
    uint64_t next_us;      /* monotonic time before which lines are left out */
    unsigned long dropped; /* lines left out since the last one written */
};

/*
 * True when a line of this kind may be written now; then *dropped is the
 * number left out before it (and the count starts again). False: the
 * line is counted as left out.
 */
bool log_rate_allow(struct log_rate *r, unsigned long *dropped);

#define log_debug(...)                                                                             \
    do {                                                                                           \
        if (log_enabled(LOG_DEBUG))                                                                \
            log_msg(LOG_DEBUG, __VA_ARGS__);                                                       \
    } while (0)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
