/* placeholder */
typedef int vs_image_placeholder_t;
