int bv_core_placeholder;
