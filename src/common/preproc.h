/* preproc.h: the image-processor settings of a checkpoint, as plain data.
 *
 * model/ fills this from preprocessor_config.json (ViTImageProcessor and the
 * legacy ViTFeatureExtractor form, transformers' defaults for missing keys);
 * image/ consumes it to turn an RGB8 image into the float tensor the model
 * expects.  It lives in common/ so that neither module includes the other.
 */
#ifndef VS_COMMON_PREPROC_H
#define VS_COMMON_PREPROC_H

#include <stdbool.h>

/* Pillow's resampling filters, with Pillow's numeric values (the
 * `resample` key of preprocessor_config.json uses these numbers). */
enum vs_resample {
    VS_RESAMPLE_NEAREST  = 0,
    VS_RESAMPLE_LANCZOS  = 1,
    VS_RESAMPLE_BILINEAR = 2,
    VS_RESAMPLE_BICUBIC  = 3,
    VS_RESAMPLE_BOX      = 4,
    VS_RESAMPLE_HAMMING  = 5,
};

struct vs_preproc {
    bool do_resize;          /* default true */
    int height, width;       /* resize target; default 224x224 */
    enum vs_resample resample; /* default BILINEAR */
    bool do_rescale;         /* default true */
    double rescale_factor;   /* default 1/255 (applied in double, rounded once to float) */
    bool do_normalize;       /* default true */
    float image_mean[3];     /* default 0.5, 0.5, 0.5 */
    float image_std[3];      /* default 0.5, 0.5, 0.5 */
    bool do_convert_rgb;     /* informational: images are always RGB8 here */
};

#endif
