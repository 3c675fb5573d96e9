/* placeholder until verify lands */
#include "repl_priv.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>

enum MHD_Result repl_verify_request(struct replicator *r, struct MHD_Connection *conn,
				    const struct repl_env *e, void *msg)
{
	(void)msg;
	return repl_reply_error(r, conn, e, "unsupported", "verify is not built yet");
}

int repl_verify_run(struct replicator *r, int repair, char *msg, size_t msglen, void **result)
{
	(void)r;
	(void)repair;
	*result = NULL;
	snprintf(msg, msglen, "verify is not built yet");
	return -ENOSYS;
}

void repl_verify_point(struct replicator *r, uint64_t lsn)
{
	(void)r;
	(void)lsn;
}
