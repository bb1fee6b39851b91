/*
 * testfilter.c - milterkit's reference filter built on Sendmail's libmilter (the real one, not
 * ours). The interop tests put it behind Postfix, or drive it with milterkit's MTA side, and
 * check that every action arrives and is applied.
 *
 * Usage: testfilter inet:PORT@127.0.0.1 [full|noop]
 *
 * Mode "full" (default). Every callback is logged to stderr, one line each. Decisions:
 *   MAIL FROM <early-reject@...>  -> 550 5.7.1 at MAIL (smfi_setreply + SMFIS_REJECT)
 *   at end of message, by Subject keyword:
 *     REJECTME     -> 550 5.7.1 Message rejected by libmilter testfilter (REJECTME)
 *     TEMPFAILME   -> 451 4.7.1 Try again later (TEMPFAILME)
 *     DISCARDME    -> SMFIS_DISCARD (the MTA answers 250 and drops the message)
 *     QUARANTINEME -> smfi_quarantine("QUARANTINEME seen by libmilter testfilter"), accepted
 *     MODIFYME     -> every modification libmilter offers:
 *                       Subject changed to "MODIFIED by libmilter testfilter"
 *                       X-Libmilter-First inserted at index 0
 *                       first X-Delete-Me header deleted
 *                       recipient <added@example.test> added (smfi_addrcpt)
 *                       recipient <added-par@example.test> added with NOTIFY=NEVER
 *                         (smfi_addrcpt_par)
 *                       recipient <removed@example.test> deleted (smfi_delrcpt)
 *                       envelope sender changed to <changed-from@example.test> (smfi_chgfrom)
 *                       body replaced by BODY_REPLACEMENT below
 *   every message that is not rejected, tempfailed or discarded gets "X-Libmilter-Test: yes".
 *
 * Mode "noop": no logging, no actions requested; every callback answers SMFIS_CONTINUE, so an
 * MTA side can be benchmarked against real libmilter without the filter doing work.
 *
 * Build: cc -O2 -o testfilter testfilter.c -lmilter -lpthread
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>
#include <libmilter/mfapi.h>

#define BODY_REPLACEMENT "This body was replaced by the libmilter testfilter.\r\n"

enum { F_REJECT = 1, F_TEMPFAIL = 2, F_DISCARD = 4, F_MODIFY = 8, F_QUARANTINE = 16 };

struct msgstate { int flags; };

static struct msgstate *state(SMFICTX *ctx) { return (struct msgstate *) smfi_getpriv(ctx); }

static void logline(SMFICTX *ctx, const char *event, const char *detail) {
  const char *qid = smfi_getsymval(ctx, "i");
  fprintf(stderr, "testfilter %-8s qid=%s %s\n", event, qid ? qid : "-", detail ? detail : "");
  fflush(stderr);
}

/* ---- full mode ---- */

static sfsistat full_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *addr) {
  (void) addr;
  struct msgstate *s = calloc(1, sizeof *s);
  if (s == NULL) return SMFIS_TEMPFAIL;
  smfi_setpriv(ctx, s);
  logline(ctx, "connect", host);
  return SMFIS_CONTINUE;
}

static sfsistat full_helo(SMFICTX *ctx, char *name) {
  logline(ctx, "helo", name);
  return SMFIS_CONTINUE;
}

static sfsistat full_envfrom(SMFICTX *ctx, char **argv) {
  struct msgstate *s = state(ctx);
  if (s != NULL) s->flags = 0; /* a new transaction on the same connection */
  logline(ctx, "envfrom", argv[0]);
  if (strncasecmp(argv[0], "<early-reject@", 14) == 0) {
    smfi_setreply(ctx, "550", "5.7.1", "sender refused by libmilter testfilter");
    return SMFIS_REJECT;
  }
  return SMFIS_CONTINUE;
}

static sfsistat full_envrcpt(SMFICTX *ctx, char **argv) {
  logline(ctx, "envrcpt", argv[0]);
  return SMFIS_CONTINUE;
}

static sfsistat full_header(SMFICTX *ctx, char *name, char *value) {
  struct msgstate *s = state(ctx);
  char line[600];
  snprintf(line, sizeof line, "%s: %s", name, value);
  logline(ctx, "header", line);
  if (s != NULL && strcasecmp(name, "Subject") == 0) {
    if (strstr(value, "REJECTME") != NULL) s->flags |= F_REJECT;
    if (strstr(value, "TEMPFAILME") != NULL) s->flags |= F_TEMPFAIL;
    if (strstr(value, "DISCARDME") != NULL) s->flags |= F_DISCARD;
    if (strstr(value, "MODIFYME") != NULL) s->flags |= F_MODIFY;
    if (strstr(value, "QUARANTINEME") != NULL) s->flags |= F_QUARANTINE;
  }
  return SMFIS_CONTINUE;
}

static sfsistat full_eoh(SMFICTX *ctx) {
  logline(ctx, "eoh", NULL);
  return SMFIS_CONTINUE;
}

static sfsistat full_body(SMFICTX *ctx, unsigned char *chunk, size_t len) {
  char detail[64];
  (void) chunk;
  snprintf(detail, sizeof detail, "%zu bytes", len);
  logline(ctx, "body", detail);
  return SMFIS_CONTINUE;
}

/* Runs one modification; a failure of libmilter turns the message into a tempfail. */
#define MUST(call)                                  \
  do {                                              \
    if ((call) != MI_SUCCESS) {                     \
      logline(ctx, "failed", #call);                \
      return SMFIS_TEMPFAIL;                        \
    }                                               \
  } while (0)

static sfsistat full_eom(SMFICTX *ctx) {
  struct msgstate *s = state(ctx);
  int flags = s != NULL ? s->flags : 0;
  logline(ctx, "eom", NULL);
  if (flags & F_REJECT) {
    smfi_setreply(ctx, "550", "5.7.1", "Message rejected by libmilter testfilter (REJECTME)");
    return SMFIS_REJECT;
  }
  if (flags & F_TEMPFAIL) {
    smfi_setreply(ctx, "451", "4.7.1", "Try again later (TEMPFAILME)");
    return SMFIS_TEMPFAIL;
  }
  if (flags & F_DISCARD) return SMFIS_DISCARD;
  MUST(smfi_addheader(ctx, "X-Libmilter-Test", "yes"));
  if (flags & F_MODIFY) {
    static char body[] = BODY_REPLACEMENT;
    MUST(smfi_chgheader(ctx, "Subject", 1, "MODIFIED by libmilter testfilter"));
    MUST(smfi_insheader(ctx, 0, "X-Libmilter-First", "inserted at index 0"));
    MUST(smfi_chgheader(ctx, "X-Delete-Me", 1, NULL));
    MUST(smfi_addrcpt(ctx, "<added@example.test>"));
    MUST(smfi_addrcpt_par(ctx, "<added-par@example.test>", "NOTIFY=NEVER"));
    MUST(smfi_delrcpt(ctx, "<removed@example.test>"));
    MUST(smfi_chgfrom(ctx, "<changed-from@example.test>", NULL));
    MUST(smfi_replacebody(ctx, (unsigned char *) body, sizeof body - 1));
  }
  if (flags & F_QUARANTINE) {
    MUST(smfi_quarantine(ctx, "QUARANTINEME seen by libmilter testfilter"));
  }
  return SMFIS_CONTINUE;
}

static sfsistat full_abort(SMFICTX *ctx) {
  logline(ctx, "abort", NULL);
  return SMFIS_CONTINUE;
}

static sfsistat full_close(SMFICTX *ctx) {
  logline(ctx, "close", NULL);
  free(state(ctx));
  smfi_setpriv(ctx, NULL);
  return SMFIS_CONTINUE;
}

static struct smfiDesc full_desc = {
  "milterkit-libmilter-testfilter", SMFI_VERSION,
  SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_ADDRCPT | SMFIF_ADDRCPT_PAR | SMFIF_DELRCPT |
    SMFIF_CHGFROM | SMFIF_CHGBODY | SMFIF_QUARANTINE,
  full_connect, full_helo, full_envfrom, full_envrcpt, full_header, full_eoh, full_body,
  full_eom, full_abort, full_close, NULL /* unknown */, NULL /* data */, NULL /* negotiate */
};

/* ---- noop mode ---- */

static sfsistat noop_connect(SMFICTX *c, char *h, _SOCK_ADDR *a) { (void) c; (void) h; (void) a; return SMFIS_CONTINUE; }
static sfsistat noop_helo(SMFICTX *c, char *h) { (void) c; (void) h; return SMFIS_CONTINUE; }
static sfsistat noop_args(SMFICTX *c, char **v) { (void) c; (void) v; return SMFIS_CONTINUE; }
static sfsistat noop_header(SMFICTX *c, char *n, char *v) { (void) c; (void) n; (void) v; return SMFIS_CONTINUE; }
static sfsistat noop_ctx(SMFICTX *c) { (void) c; return SMFIS_CONTINUE; }
static sfsistat noop_body(SMFICTX *c, unsigned char *b, size_t l) { (void) c; (void) b; (void) l; return SMFIS_CONTINUE; }

static struct smfiDesc noop_desc = {
  "milterkit-libmilter-noop", SMFI_VERSION, 0,
  noop_connect, noop_helo, noop_args, noop_args, noop_header, noop_ctx, noop_body,
  noop_ctx, noop_ctx, noop_ctx, NULL, NULL, NULL
};

int main(int argc, char **argv) {
  const char *conn = argc > 1 ? argv[1] : "inet:9999@127.0.0.1";
  const char *mode = argc > 2 ? argv[2] : "full";
  struct smfiDesc *desc;
  if (strcmp(mode, "full") == 0) desc = &full_desc;
  else if (strcmp(mode, "noop") == 0) desc = &noop_desc;
  else {
    fprintf(stderr, "testfilter: unknown mode %s (expected full or noop)\n", mode);
    return 2;
  }
  if (smfi_setconn((char *) conn) == MI_FAILURE) {
    fprintf(stderr, "testfilter: smfi_setconn %s failed\n", conn);
    return 1;
  }
  if (smfi_register(*desc) == MI_FAILURE) {
    fprintf(stderr, "testfilter: smfi_register failed\n");
    return 1;
  }
  if (smfi_opensocket(1) == MI_FAILURE) {
    fprintf(stderr, "testfilter: cannot listen on %s\n", conn);
    return 1;
  }
  fprintf(stderr, "testfilter listening on %s mode %s (libmilter)\n", conn, mode);
  fflush(stderr);
  return smfi_main() == MI_SUCCESS ? 0 : 1;
}
