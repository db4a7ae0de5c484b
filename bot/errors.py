"""The bot layer's error: bad mbox, diff, config, or a remote service that refused us."""
from jit.errors import BpfKasanError


class BotError(BpfKasanError):
    """Bad input to the bot, or an outlet (git, GitHub, patchwork, lore) that failed."""
