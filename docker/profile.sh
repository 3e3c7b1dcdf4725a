# Login shells (bash -l) reset PATH from /etc/profile on Debian-based images; keep the training venv first.
case ":${PATH}:" in
    *":${VIRTUAL_ENV:-/opt/venv}/bin:"*) ;;
    *) PATH="${VIRTUAL_ENV:-/opt/venv}/bin:${PATH}"; export PATH ;;
esac
