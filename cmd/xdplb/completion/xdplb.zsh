#compdef xdplb
# zsh completion for xdplb, printed by `xdplb completion zsh`: put it in a
# directory of $fpath as _xdplb (xdplb completion zsh > "${fpath[1]}/_xdplb"),
# or source it after compinit (source <(xdplb completion zsh)).
#
# It runs the command line typed so far with --generate-bash-completion
# last: xdplb then prints the candidates for the next word, one a line
# (a tab and a description may follow), and runs nothing.
_xdplb() {
	local cur=${words[CURRENT]} line
	local -a args lines described plain
	args=("${(@)words[2,CURRENT-1]}")
	# A flag being typed is completed from its start; anything else from
	# the words before it.
	[[ $cur == -* ]] && args+=("$cur")
	lines=("${(@f)$(${words[1]} "${(@)args}" --generate-bash-completion 2>/dev/null)}")
	for line in "${lines[@]}"; do
		[[ -z $line ]] && continue
		if [[ $line == *$'\t'* ]]; then
			described+=("${${line%%$'\t'*}//:/\\:}:${line#*$'\t'}")
		else
			plain+=("$line")
		fi
	done
	if (( ${#described} + ${#plain} == 0 )); then
		_files
		return
	fi
	(( ${#described} )) && _describe -t xdplb 'xdplb' described
	(( ${#plain} )) && compadd -a plain
	return 0
}

if [[ $funcstack[1] == _xdplb ]]; then
	# autoloaded from $fpath: complete now
	_xdplb "$@"
else
	# sourced
	compdef _xdplb xdplb
fi
