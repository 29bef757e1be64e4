/*
 * Catalog upkeep: history retention and consistent copies of the catalog.
 *
 * History is what the service only looks back at: events, finished jobs,
 * verification reports and policy runs.  bvdb_history_prune deletes one
 * small batch of one kind in its own transaction, so a caller deleting
 * months of history holds the catalog lock for one batch at a time and the
 * API's statements run between batches.  What stays whatever its age:
 *   events       the newest one (its seq is the event head clients resume from);
 *   jobs         live jobs (status not 'null') and rows without finished_at;
 *   reports      reports still backing damage: named by a damaged extent, or
 *                corrupt and listing an affected backup that is still corrupt
 *                or damaged;
 *   policy_runs  unfinished runs and the newest run of each policy and kind
 *                (the policy view's last_run).
 * Times are RFC 3339 UTC strings, compared as text (same format everywhere).
 *
 * bvdb_copy_to writes a consistent copy of the open catalog into a new
 * SQLite file with the online backup API, a few pages per step, taking the
 * catalog lock per step only; changes made meanwhile through this
 * connection are carried into the copy by SQLite.  The copy is switched to
 * journal_mode=DELETE so that it is one self-contained file.
 *
 * Locking: see catalog.h.  Neither function may be called inside a
 * transaction.
 */
#ifndef BVDB_UPKEEP_H
#define BVDB_UPKEEP_H

#include <stddef.h>
#include <stdint.h>

#include "bvdb/catalog.h"

enum bvdb_history {
    BVDB_HISTORY_EVENTS,
    BVDB_HISTORY_JOBS,
    BVDB_HISTORY_REPORTS,
    BVDB_HISTORY_POLICY_RUNS,
    BVDB_HISTORY_KINDS,
};
/* "events", "jobs", "reports", "policy_runs": indexed by enum bvdb_history. */
extern const char *const bvdb_history_names[BVDB_HISTORY_KINDS];

/* Delete at most limit rows of kind older than cutoff (RFC 3339), as above,
 * in one transaction.  Returns the number deleted (0: nothing left) or -errno. */
int bvdb_history_prune(bvdb *db, enum bvdb_history kind, const char *cutoff, int limit);

/* Copy the catalog into path (a new file: it must not exist), pages_per_step
 * pages at a time, calling pause(opaque) between steps (may be NULL).
 * 0, or -errno with a sentence in err. */
int bvdb_copy_to(bvdb *db, const char *path, int pages_per_step,
                 void (*pause)(void *opaque), void *opaque, char *err, size_t errlen);

#endif
