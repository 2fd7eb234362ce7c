/* placeholder so the library has a source until serve/ lands */
typedef int vs_serve_placeholder_t;
