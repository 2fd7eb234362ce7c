/* placeholder */
typedef int vs_model_placeholder_t;
