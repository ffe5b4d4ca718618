/*
 * fuzz_msg.c - the peer message parser (msg.c) on any bytes: each input is
 * one frame's payload as a peer stream delivers it, a JSON message in
 * either direction (coordinator to participant, participant to
 * coordinator), with or without a RESULTS trailer after it. The checks are
 * in msgcheck.h.
 */
#include "msgcheck.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet("fuzz_msg");
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    msgcheck_frame((const char *)data, size);
    return 0;
}
