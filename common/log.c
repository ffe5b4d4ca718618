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

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static char log_prog[32] = "dtx";
static enum log_level log_min = LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};

void log_init(const char *prog, enum log_level level)
{
    snprintf(log_prog, sizeof(log_prog), "%s", prog);
    log_min = level;
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
    char line[2048], msg[1900];
    struct timeval tv;
    struct tm tm;
    size_t n;
    va_list ap;

    if (!log_enabled(level))
        return;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03dZ %s[%d] %s ", (int)(tv.tv_usec / 1000),
                          log_prog, (int)getpid(), level_names[level]);
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    n = put_escaped(line, n, sizeof(line) - 1, msg);
    line[n++] = '\n';
    /* A failed write of a diagnostic line has nowhere better to be reported. */
    if (write(STDERR_FILENO, line, n) < 0)
        return;
}
