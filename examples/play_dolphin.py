"""Play Melee in Slippi Dolphin with a zoo preset, through libmelee.

    python examples/play_dolphin.py --dolphin ~/.config/Slippi\\ Launcher/netplay --iso melee.iso

The bot takes --port; plug a controller into --opponent-port, or let a second libmelee
controller pick a CPU there with --cpu-level. Needs Slippi Dolphin and a Melee 1.02 ISO, so it
is not run in CI. Ctrl-C stops Dolphin.

The bot plays at the delays its preset was trained with. On netplay (--connect-code), Slippi's
online delay (--online-delay, frames) holds the bot's inputs back, which counts towards the
preset's frame delay: the agent buffers the rest itself, so the preset's frame_delay must be at
least the online delay. A preset trained over a range of delays (`exphil train --frame-delay
0-18`) plays at the least one in its range that the online delay allows.
"""

import argparse
import signal
import sys

import melee

from exphil_keras import agent, zoo

SLOW_FRAME_MS = 12  # past this, Dolphin may drop the bot's input for the frame


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dolphin", required=True, help="Slippi Dolphin folder or executable")
    parser.add_argument("--iso", required=True, help="Melee NTSC 1.02 ISO")
    parser.add_argument("--model", default="gru_standard", help="preset name or folder")
    parser.add_argument("--port", type=int, default=1, help="the bot's controller port (1-4)")
    parser.add_argument("--opponent-port", type=int, default=2)
    parser.add_argument("--character", default="FOX", help="melee.Character name, e.g. FALCO")
    parser.add_argument("--stage", default="FINAL_DESTINATION", help="melee.Stage name")
    parser.add_argument(
        "--cpu-level", type=int, default=0, help="1-9: a CPU opponent on --opponent-port"
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    parser.add_argument("--connect-code", help="play a Slippi netplay direct match instead")
    parser.add_argument(
        "--online-delay",
        type=int,
        default=0,
        help="Slippi's online input delay in frames (netplay only; counts towards the preset's "
        "frame_delay)",
    )
    args = parser.parse_args()
    if args.online_delay and not args.connect_code:
        parser.error("--online-delay applies to netplay matches (--connect-code) only")
    return args


def main():
    args = parse_args()
    character, stage = melee.Character[args.character], melee.Stage[args.stage]
    model, metadata = zoo.load(args.model, compile=False), zoo.info(args.model)
    bot = agent.Agent(
        model,
        args.port,
        args.opponent_port,
        temperature=args.temperature,
        frame_delay=agent.playing_delay(metadata["frame_delay"], online_delay=args.online_delay),
        action_delay=metadata["action_delay"],
        online_delay=args.online_delay,
    )

    console = melee.Console(path=args.dolphin, fullscreen=False, online_delay=args.online_delay)
    controller = melee.Controller(console, args.port)
    cpu = melee.Controller(console, args.opponent_port) if args.cpu_level else None
    console.run(iso_path=args.iso)
    if not console.connect():
        sys.exit("could not connect to Dolphin")
    for pad in (controller, cpu):
        if pad is not None and not pad.connect():
            sys.exit(f"could not plug a controller into port {pad.port}")

    def stop(*_):
        console.stop()
        sys.exit(0)

    signal.signal(signal.SIGINT, stop)
    bot_menu, cpu_menu = melee.MenuHelper(), melee.MenuHelper()
    while True:
        gamestate = console.step()
        if gamestate is None:
            continue
        if console.processingtime * 1000 > SLOW_FRAME_MS:
            print(f"slow frame: {console.processingtime * 1000:.1f} ms", file=sys.stderr)
        if gamestate.menu_state in (melee.Menu.IN_GAME, melee.Menu.SUDDEN_DEATH):
            bot.act(gamestate)
            bot.press(controller)
            continue
        bot_menu.menu_helper_simple(
            gamestate, controller, character, stage, args.connect_code, autostart=cpu is not None
        )
        if cpu is not None:
            cpu_menu.menu_helper_simple(
                gamestate, cpu, melee.Character.FOX, stage, cpu_level=args.cpu_level
            )


if __name__ == "__main__":
    main()
