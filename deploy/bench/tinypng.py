"""A tiny RGB canvas with filled rectangles and a 5x7 bitmap font, saved as
PNG with zlib: enough for the ratio chart when matplotlib is not installed
(offline CI, --quick)."""
import struct
import zlib

# Classic 5x7 font, column-major: 5 bytes per glyph, bit 0 is the top row.
# Upper case only: text is upper-cased before drawing; "×" is a small x.
FONT = {
    " ": "0000000000", ".": "0060600000", ",": "0050300000", ":": "0036360000",
    "(": "001c224100", ")": "0041221c00", "%": "2313086462", "/": "2010080402",
    "-": "0808080808", "+": "08083e0808", "=": "1414141414", "<": "0814224100",
    ">": "0041221408", "×": "4428102844", "_": "4040404040",
    "0": "3e5149453e", "1": "00427f4000", "2": "4261514946", "3": "2141454b31",
    "4": "1814127f10", "5": "2745454539", "6": "3c4a494930", "7": "0171090503",
    "8": "3649494936", "9": "064949291e",
    "A": "7e1111117e", "B": "7f49494936", "C": "3e41414122", "D": "7f4141221c",
    "E": "7f49494941", "F": "7f09090901", "G": "3e4149497a", "H": "7f0808087f",
    "I": "00417f4100", "J": "2040413f01", "K": "7f08142241", "L": "7f40404040",
    "M": "7f021c027f", "N": "7f0408107f", "O": "3e4141413e", "P": "7f09090906",
    "Q": "3e4151215e", "R": "7f09192946", "S": "4649494931", "T": "01017f0101",
    "U": "3f4040403f", "V": "1f2040201f", "W": "3f4038403f", "X": "6314081463",
    "Y": "0708700807", "Z": "6151494543",
}


class Canvas:
    def __init__(self, width, height, background=(255, 255, 255)):
        self.w, self.h = width, height
        self.px = [bytearray(bytes(background) * width) for _ in range(height)]

    def rect(self, x0, y0, x1, y1, color):
        x0, x1 = max(0, int(x0)), min(self.w, int(x1))
        for y in range(max(0, int(y0)), min(self.h, int(y1))):
            self.px[y][3 * x0 : 3 * x1] = bytes(color) * max(0, x1 - x0)

    def text(self, x, y, s, color=(0, 0, 0), scale=2):
        """Draws s with its top-left corner at (x, y); returns the end x."""
        for ch in s:
            glyph = FONT.get(ch.upper(), FONT[" "])
            for col in range(5):
                bits = int(glyph[2 * col : 2 * col + 2], 16)
                for row in range(7):
                    if bits >> row & 1:
                        px, py = x + col * scale, y + row * scale
                        self.rect(px, py, px + scale, py + scale, color)
            x += 6 * scale
        return x

    @staticmethod
    def text_width(s, scale=2):
        return len(s) * 6 * scale

    def save(self, path):
        raw = b"".join(b"\x00" + bytes(row) for row in self.px)

        def chunk(kind, data):
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0)  # 8-bit RGB
        with open(path, "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\n")
            f.write(chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
