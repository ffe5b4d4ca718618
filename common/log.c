/*
 * log.c - diagnostic log lines on stderr.
 *
 * State: the program name and level below are the process's log
 * configuration, written once by log_init() before any thread starts and
 * only read afterwards. Each line is formatted into a local buffer and
 * written with one write(2), so lines from the decision-log writer thread
 * and the event loop never interleave.
 *
 * One message is one line: control characters in it (a libpq message's
 * newlines, a CR/LF in an operator's reason) are written as \n, \r, \t or
 * \xNN, and trailing ones are dropped, so nothing a client or a database
 * sends can forge or split a line.
 */
#include "dtx/log.h"
#include "dtx/utf8.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char log_prog[32] = "dtx";
static enum log_level log_min = LOG_INFO;
static enum log_format log_fmt = LOG_TEXT;
static _Thread_local struct log_ctx log_context;

static const char *const level_names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
static const char *const level_words[] = {"debug", "info", "warn", "error"};

void log_init(const char *prog, enum log_level level)
{
    snprintf(log_prog, sizeof(log_prog), "%s", prog);
    log_min = level;
}

void log_set_format(enum log_format format)
{
    log_fmt = format;
}

int log_format_parse(const char *name)
{
    static const char *const names[] = {"text", "logfmt", "json"};

    for (int i = 0; i < 3; i++) {
        if (strcmp(name, names[i]) == 0)
            return i;
    }
    return -1;
}

struct log_ctx log_ctx_set(struct log_ctx ctx)
{
    struct log_ctx prev = log_context;

    log_context = ctx;
    return prev;
}

struct log_ctx log_ctx_get(void)
{
    return log_context;
}

struct log_ctx log_ctx_gtid(const char *gtid)
{
    struct log_ctx prev = log_context;

    log_context.gtid = gtid;
    return prev;
}

int log_level_parse(const char *name)
{
    static const char *const names[] = {"debug", "info", "warn", "error"};

    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0)
            return i;
    }
    return -1;
}

bool log_enabled(enum log_level level)
{
    return level >= log_min;
}

/* Appends msg to line[n..cap) with control characters escaped; returns the new length. */
static size_t put_escaped(char *line, size_t n, size_t cap, const char *msg)
{
    size_t len = strlen(msg);

    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r' || msg[len - 1] == ' '))
        len--;
    for (size_t i = 0; i < len && n + 4 < cap; i++) {
        unsigned char c = (unsigned char)msg[i];

        if (c >= 0x20 && c != 0x7f) {
            line[n++] = (char)c;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            line[n++] = '\\';
            line[n++] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
        } else {
            n += (size_t)snprintf(line + n, cap - n, "\\x%02x", c);
        }
    }
    return n;
}

/*
 * Appends msg to line[n..cap) as a quoted string of the structured formats:
 * for logfmt and json alike, " and \\ escaped, control characters as \\n,
 * \\r, \\t or \\u00XX (JSON's form, which logfmt readers accept as well).
 */
static size_t put_quoted(char *line, size_t n, size_t cap, const char *msg)
{
    size_t len = strlen(msg);

    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r' || msg[len - 1] == ' '))
        len--;
    if (n + 1 < cap)
        line[n++] = '"';
    for (size_t i = 0; i < len && n + 8 < cap; i++) {
        unsigned char c = (unsigned char)msg[i];

        if (c == '"' || c == '\\') {
            line[n++] = '\\';
            line[n++] = (char)c;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            line[n++] = '\\';
            line[n++] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't';
        } else if (c < 0x20 || c == 0x7f) {
            n += (size_t)snprintf(line + n, cap - n, "\\u%04x", c);
        } else if (c < 0x80) {
            line[n++] = (char)c;
        } else {
            size_t k = utf8_seq_len((const unsigned char *)msg + i, len - i);

            if (k == 0) { /* not UTF-8: a JSON reader would refuse the whole line */
                n += (size_t)snprintf(line + n, cap - n, "\\ufffd");
                continue;
            }
            memcpy(line + n, msg + i, k);
            n += k;
            i += k - 1;
        }
    }
    if (n + 1 < cap)
        line[n++] = '"';
    return n;
}

/* One field of a structured line: ` key=value` (logfmt) or `,"key":value` (json). */
static size_t put_field(char *line, size_t n, size_t cap, const char *key, const char *value,
                        bool quote)
{
    if (n + strlen(key) + 4 >= cap)
        return n;
    n += (size_t)snprintf(line + n, cap - n, log_fmt == LOG_JSON ? ",\"%s\":" : " %s=", key);
    if (quote || log_fmt == LOG_JSON)
        return put_quoted(line, n, cap, value);
    n += (size_t)snprintf(line + n, cap - n, "%s", value);
    return n < cap ? n : cap - 1;
}

/* True when s can stand unquoted in logfmt (ids, levels, names). */
static bool bare(const char *s)
{
    for (; *s; s++) {
        if (*s <= ' ' || *s == '"' || *s == '=' || *s == '\\' || (unsigned char)*s >= 0x7f)
            return false;
    }
    return true;
}

static size_t structured(char *line, size_t cap, const char *ts, enum log_level level,
                         const char *msg)
{
    char pid[16];
    size_t n = 0;
    const struct log_ctx *c = &log_context;

    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    if (log_fmt == LOG_JSON) {
        n = (size_t)snprintf(line, cap, "{\"ts\":\"%s\",\"level\":\"%s\",\"prog\":", ts,
                             level_words[level]);
        n = put_quoted(line, n, cap, log_prog);
        n += (size_t)snprintf(line + n, cap - n, ",\"pid\":%s", pid);
    } else {
        n = (size_t)snprintf(line, cap, "ts=%s level=%s", ts, level_words[level]);
        n = put_field(line, n, cap, "prog", log_prog, !bare(log_prog));
        n = put_field(line, n, cap, "pid", pid, false);
    }
    if (c->gtid)
        n = put_field(line, n, cap, "gtid", c->gtid, !bare(c->gtid));
    if (c->request_id)
        n = put_field(line, n, cap, "request_id", c->request_id, !bare(c->request_id));
    if (c->traceparent)
        n = put_field(line, n, cap, "traceparent", c->traceparent, !bare(c->traceparent));
    n = put_field(line, n, cap, "msg", msg, true);
    if (log_fmt == LOG_JSON && n + 1 < cap)
        line[n++] = '}';
    return n;
}

bool log_rate_allow(struct log_rate *r, unsigned long *dropped)
{
    struct timespec ts;
    uint64_t now;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    if (now < r->next_us) {
        r->dropped++;
        return false;
    }
    r->next_us = now + 1000000u;
    *dropped = r->dropped;
    r->dropped = 0;
    return true;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    char line[2600], msg[1900], ts[40];
    struct timeval tv;
    struct tm tm;
    size_t n;
    va_list ap;

    if (!log_enabled(level))
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof(ts) - n, ".%03dZ", (int)(tv.tv_usec / 1000));
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (log_fmt == LOG_TEXT) {
        n = (size_t)snprintf(line, sizeof(line), "%s %s[%d] %s ", ts, log_prog, (int)getpid(),
                             level_names[level]);
        n = put_escaped(line, n, sizeof(line) - 1, msg);
    } else {
        n = structured(line, sizeof(line) - 1, ts, level, msg);
    }
    line[n++] = '\n';
    /* A failed write of a diagnostic line has nowhere better to be reported. */
    if (write(STDERR_FILENO, line, n) < 0)
        return;
}
