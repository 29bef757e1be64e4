int bv_service_placeholder;
