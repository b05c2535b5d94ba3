/*
 * LD_PRELOAD shim for wrk in the benchmark's new-connection TLS scenarios
 * (i, j): makes every connection a full TLS handshake.
 *
 * wrk closes a connection with SSL_shutdown() and SSL_clear() and reuses the
 * SSL object for the next one; SSL_clear() keeps the session, so the next
 * handshake resumes it (a TLS 1.3 ticket: no certificate, no signature). This
 * wraps SSL_clear() and then drops the session, as a client that does not
 * resume would. Built by run.sh with the C compiler the Rust toolchain uses:
 *
 *     cc -shared -fPIC -O2 -o noresume.so noresume.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

typedef struct ssl_st SSL;
typedef struct ssl_session_st SSL_SESSION;

int SSL_clear(SSL *ssl)
{
    static int (*real_clear)(SSL *);
    static int (*set_session)(SSL *, SSL_SESSION *);
    int ret;

    if (!real_clear) {
        real_clear = (int (*)(SSL *))dlsym(RTLD_NEXT, "SSL_clear");
        set_session = (int (*)(SSL *, SSL_SESSION *))dlsym(RTLD_NEXT, "SSL_set_session");
    }
    ret = real_clear(ssl);
    if (set_session)
        set_session(ssl, NULL);
    return ret;
}
