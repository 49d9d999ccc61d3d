# bash completion for xdplb, printed by `xdplb completion bash`: source it
# (source <(xdplb completion bash)) or install it as
# /usr/share/bash-completion/completions/xdplb.
#
# It runs the command line typed so far with --generate-bash-completion
# last: xdplb then prints the candidates for the next word, one a line
# (a tab and a description may follow), and runs nothing.
_xdplb() {
	local cur words cword
	if declare -F _init_completion >/dev/null 2>&1; then
		_init_completion -n =: || return
	else
		COMPREPLY=()
		words=("${COMP_WORDS[@]}")
		cword=$COMP_CWORD
		cur=${COMP_WORDS[COMP_CWORD]}
	fi
	local -a args=("${words[@]:1:cword-1}")
	# A flag being typed is completed from its start; anything else from
	# the words before it.
	[[ $cur == -* ]] && args+=("$cur")
	local IFS=$'\n'
	local -a cands
	cands=($("${words[0]}" "${args[@]}" --generate-bash-completion 2>/dev/null | cut -f1))
	COMPREPLY=($(compgen -W "${cands[*]}" -- "$cur"))
	# VIPs and backends hold colons, which bash splits words at.
	if declare -F __ltrim_colon_completions >/dev/null 2>&1; then
		__ltrim_colon_completions "$cur"
	fi
}
complete -o bashdefault -o default -F _xdplb xdplb
