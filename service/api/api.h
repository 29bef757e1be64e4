/* Handlers, one group per file under api/; the route table is routes.c. */
#ifndef BV_API_H
#define BV_API_H

#include "http/reply.h"

void api_health(struct bv_request *req, struct bv_reply *rep);
void api_metrics(struct bv_request *req, struct bv_reply *rep);
void api_events_list(struct bv_request *req, struct bv_reply *rep);
void api_events_stream(struct bv_request *req, struct bv_reply *rep);
void api_static(struct bv_request *req, struct bv_reply *rep);

void api_images_create(struct bv_request *req, struct bv_reply *rep);
void api_images_list(struct bv_request *req, struct bv_reply *rep);
void api_images_get(struct bv_request *req, struct bv_reply *rep);
void api_images_delete(struct bv_request *req, struct bv_reply *rep);
void api_images_compare(struct bv_request *req, struct bv_reply *rep);
void api_images_check(struct bv_request *req, struct bv_reply *rep);
void api_images_rebase(struct bv_request *req, struct bv_reply *rep);

void api_drives_create(struct bv_request *req, struct bv_reply *rep);
void api_drives_list(struct bv_request *req, struct bv_reply *rep);
void api_drives_get(struct bv_request *req, struct bv_reply *rep);
void api_drives_delete(struct bv_request *req, struct bv_reply *rep);
void api_drives_resize(struct bv_request *req, struct bv_reply *rep);
void api_drives_data_put(struct bv_request *req, struct bv_reply *rep);
void api_drives_data_get(struct bv_request *req, struct bv_reply *rep);
void api_drives_io(struct bv_request *req, struct bv_reply *rep);
void api_exports_list(struct bv_request *req, struct bv_reply *rep);

void api_bitmaps_list(struct bv_request *req, struct bv_reply *rep);
void api_bitmaps_create(struct bv_request *req, struct bv_reply *rep);
void api_bitmaps_get(struct bv_request *req, struct bv_reply *rep);
void api_bitmaps_delete(struct bv_request *req, struct bv_reply *rep);
void api_bitmaps_clear(struct bv_request *req, struct bv_reply *rep);
void api_bitmaps_enable(struct bv_request *req, struct bv_reply *rep);
void api_bitmaps_disable(struct bv_request *req, struct bv_reply *rep);
void api_bitmaps_merge(struct bv_request *req, struct bv_reply *rep);
void api_bitmaps_extents(struct bv_request *req, struct bv_reply *rep);

void api_backups_create(struct bv_request *req, struct bv_reply *rep);
void api_backups_list(struct bv_request *req, struct bv_reply *rep);
void api_backups_get(struct bv_request *req, struct bv_reply *rep);
void api_backups_delete(struct bv_request *req, struct bv_reply *rep);
void api_backups_data(struct bv_request *req, struct bv_reply *rep);
void api_backups_restore(struct bv_request *req, struct bv_reply *rep);
void api_jobs_create(struct bv_request *req, struct bv_reply *rep);
void api_jobs_list(struct bv_request *req, struct bv_reply *rep);
void api_jobs_get(struct bv_request *req, struct bv_reply *rep);
void api_jobs_pause(struct bv_request *req, struct bv_reply *rep);
void api_jobs_resume(struct bv_request *req, struct bv_reply *rep);
void api_jobs_cancel(struct bv_request *req, struct bv_reply *rep);
void api_jobs_finalize(struct bv_request *req, struct bv_reply *rep);
void api_jobs_dismiss(struct bv_request *req, struct bv_reply *rep);
void api_jobs_set_speed(struct bv_request *req, struct bv_reply *rep);
void api_transactions_run(struct bv_request *req, struct bv_reply *rep);
void api_policies_create(struct bv_request *req, struct bv_reply *rep);
void api_policies_list(struct bv_request *req, struct bv_reply *rep);
void api_policies_get(struct bv_request *req, struct bv_reply *rep);
void api_policies_put(struct bv_request *req, struct bv_reply *rep);
void api_policies_delete(struct bv_request *req, struct bv_reply *rep);
void api_policies_run(struct bv_request *req, struct bv_reply *rep);
void api_policies_runs(struct bv_request *req, struct bv_reply *rep);
void api_policies_retention(struct bv_request *req, struct bv_reply *rep);
void api_test_clock(struct bv_request *req, struct bv_reply *rep);

void api_reports_list(struct bv_request *req, struct bv_reply *rep);
void api_reports_get(struct bv_request *req, struct bv_reply *rep);

#endif
