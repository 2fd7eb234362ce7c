# Warnings on for every C target; POSIX 2008 APIs (clock_gettime, strdup...).
add_compile_definitions(_POSIX_C_SOURCE=200809L _DEFAULT_SOURCE)
set(VS_C_WARNINGS -Wall -Wextra -Wshadow -Wstrict-prototypes
    -Wmissing-prototypes -Wno-unused-parameter)
add_compile_options("$<$<COMPILE_LANGUAGE:C>:${VS_C_WARNINGS}>")
