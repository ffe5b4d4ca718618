/*
 * version.h - the version every dtx program reports (--version).
 */
#ifndef DTX_VERSION_H
#define DTX_VERSION_H

#define DTX_VERSION "0.6.0"

#endif
