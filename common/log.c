/*
 * log.c - diagnostic log lines on stderr.
 *
 * State: the program name and level below are the process's log
 * configuration, written once by log_init() before any thread starts and
 * only read afterwards. Each line is formatted into a local buffer and
 * written with one write(2), so lines from the decision-log writer thread
 * and the event loop never interleave.
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

void log_msg(enum log_level level, const char *fmt, ...)
{
    char line[2048];
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
    if (n < sizeof(line))
        n += (size_t)vsnprintf(line + n, sizeof(line) - n, fmt, ap);
    va_end(ap);
    if (n >= sizeof(line) - 1)
        n = sizeof(line) - 2;
    line[n++] = '\n';
    /* A failed write of a diagnostic line has nowhere better to be reported. */
    if (write(STDERR_FILENO, line, n) < 0)
        return;
}
