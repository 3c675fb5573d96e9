/* Journal retention: the single place that decides which records are still
 * needed. A record may be deleted only when nothing can ask for it again:
 * not crash replay (it is older than the checkpoint) and, once replication
 * exists, not a slave that has yet to receive it. */
#include "recovery.h"

uint64_t retention_floor(const struct retention_inputs *in)
{
	uint64_t floor = in->checkpoint_lsn + 1;

	if (in->keep_all)
		return 0;
	/* A slave further behind than the bound would pin the journal without
	 * limit (a dead disk, a machine gone for a week): it is sent a snapshot
	 * when it comes back, so what it needs stops counting. */
	for (int i = 0; i < in->nslaves; i++) {
		const struct retention_slave *s = &in->slaves[i];
		if (in->max_slave_bytes && s->lag_bytes > in->max_slave_bytes)
			continue;
		if (s->next_lsn < floor)
			floor = s->next_lsn;
	}
	return floor;
}
