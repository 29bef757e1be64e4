/*
 * Retention: which of a policy's backups its keep_* rules keep, and why.
 *
 * Why this unit exists: a policy run prunes what its retention no longer
 * keeps, and GET /policies/{name}/retention shows the same verdicts without
 * pruning (a prune simulator).  Both must compute the same answer, so the
 * selection is one pure function over typed records: no HTTP, JSON, SQL,
 * clock or global state.  It is reentrant; to_local is called on the
 * caller's thread, once per backup.
 *
 * Semantics (restic `forget`, contract "Policies"):
 *  - The caller passes one policy's own backups (manual backups and other
 *    policies' backups must not be passed: whatever is passed may be pruned).
 *    Backups are grouped by drive and every rule is applied to each drive's
 *    backups separately.
 *  - Each rule is applied on its own; a backup is kept if any rule keeps it,
 *    and its verdict lists every rule that keeps it.
 *  - keep_last N keeps the N newest backups.
 *  - A period rule (hourly, daily, weekly, monthly, yearly) with N keeps the
 *    newest backup of each of the N most recent periods that contain a
 *    backup.  Periods are calendar hours, days, ISO 8601 weeks (Monday to
 *    Sunday, numbered in the ISO week-year: strftime's %G-%V, so 2027-01-01
 *    is in 2026-W53), months and years of the local time given by to_local.
 *    Empty periods do not count.  A period's recency is that of its newest
 *    backup: walking backups newest first, a backup starts a period when no
 *    newer backup of the same drive has the same period.  (With a repeated
 *    local hour at a DST change the two occurrences are one period; a zone
 *    change that moves local time back across a period boundary still gives
 *    one verdict per period, where restic would count a revisited period
 *    twice.)
 *  - The newest backup of each drive is always kept.  For a valid retention
 *    every rule above 0 keeps it, so its verdict lists all of them; the
 *    "newest" reason exists only so the invariant is enforced, not assumed,
 *    and appears only if no rule kept it (impossible for a valid retention).
 *  - Newest first means: later created_at, then larger seq, then larger id
 *    (strcmp), then later position in the input.  Input order is free.
 *  - A retention with no rule above 0 is refused (restic also refuses to
 *    act on an empty policy), and so is a negative count.
 *
 * Where this differs from its models, by choice:
 *  - restic ≥ 0.17 additionally keeps the oldest snapshot when a rule has
 *    counts left over ("oldest daily snapshot"); the contract's wording
 *    (the newest backup of each of the N most recent periods) does not, and
 *    neither does this.
 *  - Proxmox Backup Server applies its rules in order and lets a period
 *    already holding a backup kept by an earlier rule not use up a later
 *    rule's count; here (as in restic and the contract) each rule counts on
 *    its own, so the kept set can be smaller than PBS's for the same rules.
 *
 * Cost: O(n log n) time for n backups (one sort, then one per period rule),
 * O(n) memory, allocated per call.
 */
#ifndef BV_SCHED_RETENTION_H
#define BV_SCHED_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "bv/error.h"

/* The rules, in the contract's order; the names are the JSON field names. */
enum bv_retention_rule {
    BV_RET_LAST,          /* "keep_last" */
    BV_RET_HOURLY,        /* "keep_hourly" */
    BV_RET_DAILY,         /* "keep_daily" */
    BV_RET_WEEKLY,        /* "keep_weekly" */
    BV_RET_MONTHLY,       /* "keep_monthly" */
    BV_RET_YEARLY,        /* "keep_yearly" */
    BV_RET_N_RULES,
    BV_RET_NEWEST = BV_RET_N_RULES,   /* "newest": a reason, not a rule */
    BV_RET_N_REASONS,
};

#define BV_RET_BIT(reason) (1u << (reason))

/* Counts indexed by enum bv_retention_rule, each ≥ 0; 0 turns a rule off. */
struct bv_retention {
    int64_t keep[BV_RET_N_RULES];
};

/* One backup of the policy.  Borrowed for the duration of the call. */
struct bv_retention_backup {
    const char *id;        /* not NULL */
    const char *drive;     /* not NULL: rules apply per drive */
    time_t created_at;     /* UTC */
    int64_t seq;           /* catalog sequence: orders equal created_at */
};

/* The verdict for one backup. */
struct bv_retention_verdict {
    bool keep;
    unsigned reasons;      /* BV_RET_BIT(r) for each reason r that keeps it */
};

/* Local time of t in the service's time zone.  Only tm_year, tm_mon,
 * tm_mday and tm_hour are read (weekdays and ISO weeks are computed from
 * the date), so a converter need not fill the rest. */
typedef void bv_retention_to_local(void *opaque, time_t t, struct tm *out);

/* "keep_last" … "keep_yearly", "newest"; NULL for a value out of range. */
const char *bv_retention_reason_name(enum bv_retention_rule reason);

/* The rule named name ("keep_daily"), for parsing a retention object:
 * 0 and *out set, or -ENOENT ("newest" is not a rule). */
int bv_retention_rule_parse(const char *name, enum bv_retention_rule *out);

/* 0, or -EINVAL with the sentence the API returns with its 400:
 * "retention keeps nothing: set at least one keep_* rule above 0", or
 * "retention.keep_daily: must be 0 or more". */
int bv_retention_validate(const struct bv_retention *r, bv_error **errp);

/* Decide every backup: out[i] is the verdict for backups[i] (out has n
 * entries; input order is kept).  to_local NULL means UTC.
 * 0; -EINVAL for an invalid retention (bv_retention_validate's sentence),
 * a backup without id or drive, or a local time out of range; -ENOMEM.
 * On failure every verdict is keep=true with no reasons: a caller that
 * prunes by out after an error prunes nothing. */
int bv_retention_apply(const struct bv_retention *r,
                       const struct bv_retention_backup *backups, size_t n,
                       bv_retention_to_local *to_local, void *opaque,
                       struct bv_retention_verdict *out, bv_error **errp);

#endif
