/* Handlers, one group per file under api/; the route table is routes.c. */
#ifndef BV_API_H
#define BV_API_H

#include "http/reply.h"

void api_health(struct bv_request *req, struct bv_reply *rep);
void api_metrics(struct bv_request *req, struct bv_reply *rep);
void api_events_list(struct bv_request *req, struct bv_reply *rep);
void api_static(struct bv_request *req, struct bv_reply *rep);

#endif
