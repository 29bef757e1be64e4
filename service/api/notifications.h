/* /api/v1/notifications: webhooks and their delivery log (runtime/notify.h). */
#ifndef BV_API_NOTIFICATIONS_H
#define BV_API_NOTIFICATIONS_H

#include "http/reply.h"

void api_notifications_create(struct bv_request *req, struct bv_reply *rep);
void api_notifications_list(struct bv_request *req, struct bv_reply *rep);
void api_notifications_get(struct bv_request *req, struct bv_reply *rep);
void api_notifications_delete(struct bv_request *req, struct bv_reply *rep);
void api_notifications_deliveries(struct bv_request *req, struct bv_reply *rep);

#endif
