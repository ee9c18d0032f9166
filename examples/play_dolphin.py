"""Play Melee in Slippi Dolphin with a zoo preset, through libmelee.

    python examples/play_dolphin.py --dolphin ~/.config/Slippi\\ Launcher/netplay --iso melee.iso

The bot takes --port; plug a controller into --opponent-port, or let a second libmelee
controller pick a CPU there with --cpu-level. Needs Slippi Dolphin and a Melee 1.02 ISO, so it
is not run in CI. Ctrl-C stops Dolphin.
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
    return parser.parse_args()


def main():
    args = parse_args()
    character, stage = melee.Character[args.character], melee.Stage[args.stage]
    model = zoo.load(args.model, compile=False)
    bot = agent.Agent(model, args.port, args.opponent_port, temperature=args.temperature)

    console = melee.Console(path=args.dolphin, fullscreen=False)
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
