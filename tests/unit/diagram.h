/*
 * diagram.h - reads the state diagram written in a state machine's file
 * comment, so a unit test can check it against the machine's table.
 *
 * A diagram line reads "FROM --EVENT [action]--> TO" (a "*" after the
 * action marks a transition that forces a record), anywhere inside the
 * file's first comment.
 */
#ifndef DTX_TEST_DIAGRAM_H
#define DTX_TEST_DIAGRAM_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct diagram_row {
    char from[64], ev[64], action[64], to[64];
    bool durable;
};

/* Reads up to max rows from path's first comment; returns how many, or -1 if it cannot open it. */
static inline int diagram_read(const char *path, struct diagram_row *rows, int max)
{
    FILE *f = fopen(path, "r");
    char line[512];
    int n = 0;

    if (!f)
        return -1;
    while (fgets(line, sizeof(line), f) && n < max) {
        struct diagram_row *r = &rows[n];
        const char *p = line;

        if (strstr(line, "*/"))
            break;
        while (*p == ' ' || *p == '*')
            p++;
        if (sscanf(p, "%63s --%63[A-Z_0-9] [%63[a-z_0-9*]]--> %63[A-Z_]", r->from, r->ev, r->action,
                   r->to) != 4)
            continue;
        r->durable = r->action[strlen(r->action) - 1] == '*';
        if (r->durable)
            r->action[strlen(r->action) - 1] = '\0';
        n++;
    }
    fclose(f);
    return n;
}

#endif
