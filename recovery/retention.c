/* Journal retention: the single place that decides which records are still
 * needed. A record may be deleted only when nothing can ask for it again:
 * not crash replay (it is older than the checkpoint) and, once replication
 * exists, not a slave that has yet to receive it. */
#include "recovery.h"

uint64_t retention_floor(const struct retention_inputs *in)
{
	if (in->keep_all)
		return 0;
	return in->checkpoint_lsn + 1;
}
