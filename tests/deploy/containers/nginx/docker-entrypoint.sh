#!/bin/sh
# Entrypoint of the nginx TEST STAND-IN (../nginx.Containerfile). Does what the official nginx
# image's entrypoint does with templates (its 20-envsubst-on-templates.sh), written for this
# stand-in: when the command is nginx, every file under NGINX_ENVSUBST_TEMPLATE_DIR
# (/etc/nginx/templates) ending in NGINX_ENVSUBST_TEMPLATE_SUFFIX (.template) is rendered to the
# same relative path, less the suffix, under NGINX_ENVSUBST_OUTPUT_DIR (/etc/nginx/conf.d).
# envsubst replaces only ${VAR} / $VAR of variables defined in the environment (those whose
# name matches the regular expression NGINX_ENVSUBST_FILTER, when set); the rest is kept.
set -eu

render_templates() {
    template_dir="${NGINX_ENVSUBST_TEMPLATE_DIR:-/etc/nginx/templates}"
    suffix="${NGINX_ENVSUBST_TEMPLATE_SUFFIX:-.template}"
    output_dir="${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}"
    filter="${NGINX_ENVSUBST_FILTER:-}"
    [ -d "$template_dir" ] || return 0
    if [ ! -w "$output_dir" ]; then
        echo "$0: $output_dir is not writable: templates in $template_dir not rendered" >&2
        return 0
    fi
    # The names of the defined variables, as envsubst's SHELL-FORMAT: '${A} ${B} ...'.
    defined="$(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p' | grep -E -e "$filter" \
        | sed 's/.*/${&}/' | tr '\n' ' ')"
    find "$template_dir" -follow -type f -name "*$suffix" | while read -r template; do
        relative="${template#"$template_dir"/}"
        output="$output_dir/${relative%"$suffix"}"
        mkdir -p "$(dirname "$output")"
        echo "$0: rendering $template to $output"
        envsubst "$defined" <"$template" >"$output"
    done
}

if [ "${1:-}" = nginx ] || [ "${1:-}" = nginx-debug ]; then
    render_templates
fi
exec "$@"
