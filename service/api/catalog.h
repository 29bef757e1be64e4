/*
 * /api/v1/catalog: catalog backups and history upkeep (runtime/upkeep.h).
 *   POST /api/v1/catalog/backup {"file"}  → 201 {"file","size","created_at"}
 *   GET  /api/v1/catalog/upkeep           → the retention status
 *   POST /api/v1/catalog/upkeep           → 202 the status (a run starts now)
 */
#ifndef BV_API_CATALOG_H
#define BV_API_CATALOG_H

#include "http/reply.h"

void api_catalog_backup(struct bv_request *req, struct bv_reply *rep);
void api_catalog_upkeep_get(struct bv_request *req, struct bv_reply *rep);
void api_catalog_upkeep_run(struct bv_request *req, struct bv_reply *rep);

#endif
